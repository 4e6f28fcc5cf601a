"""Lock, Semaphore, Event, Condition and CapacityLimiter (mirrors tests/c/test_lock.c,
test_semaphore.c, test_event.c, test_condition.c, test_limiter.c and test_deadlock.c).

Task-only tests run on the virtual clock: ``await braid.sleep(1)`` there returns only
once every other task is blocked, which is how they let the others queue up. Tests
with threads run on the real clock and poll with a deadline, so a hang is a failure.
"""

import gc
import math
import threading
import time
import weakref

import pytest

import braid
from braid import _braid
from support import settle, wait_until


# ---- Lock -------------------------------------------------------------------------------------------


async def test_lock_async_with_owns_and_releases(virtual_clock):
    lock = braid.Lock()
    assert not lock.locked()
    assert lock.statistics() == braid.LockStatistics(False, None, 0)
    async with lock:
        assert lock.locked()
        st = lock.statistics()
        assert st.locked is True
        assert st.owner == braid.get_current_task()
        assert st.tasks_waiting == 0
    assert not lock.locked()
    assert lock.statistics().owner is None


async def test_lock_hands_over_in_fifo_order_without_barging(virtual_clock):
    lock = braid.Lock()
    order = []
    infos = {}

    async def waiter(i):
        infos[i] = braid.get_current_task()
        async with lock:
            order.append(i)

    async with braid.create_task_group() as tg:
        await lock.acquire()
        for i in range(5):
            tg.start_soon(waiter, i, name=f"waiter-{i}")
            await settle()  # waiter i is queued before waiter i + 1 starts
            assert lock.statistics().tasks_waiting == i + 1
        lock.release()
        # the lock went straight to the first waiter: nobody can barge in
        st = lock.statistics()
        assert st.locked
        assert st.owner == infos[0]
        assert st.owner.name == "waiter-0"
        assert st.tasks_waiting == 4
        with pytest.raises(braid.WouldBlock):
            lock.acquire_nowait()
        assert order == []  # the new owner has not run yet
    assert order == [0, 1, 2, 3, 4]
    assert not lock.locked()


async def test_lock_acquire_nowait_takes_a_free_lock_and_would_block_on_a_held_one(virtual_clock):
    lock = braid.Lock()
    lock.acquire_nowait()
    assert lock.statistics().owner == braid.get_current_task()
    seen = []

    async def other():
        try:
            lock.acquire_nowait()
        except braid.WouldBlock:
            seen.append("would block")

    async with braid.create_task_group() as tg:
        tg.start_soon(other)
    assert seen == ["would block"]
    assert lock.statistics().owner == braid.get_current_task()
    lock.release()
    assert not lock.locked()


async def test_lock_release_by_a_non_owner_is_a_runtime_error(virtual_clock):
    lock = braid.Lock()
    with pytest.raises(RuntimeError, match="not holding"):
        lock.release()  # nobody holds it
    errors = []

    async def other():
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    async with lock:
        async with braid.create_task_group() as tg:
            tg.start_soon(other)
        assert lock.statistics().owner == braid.get_current_task()  # still ours
    assert len(errors) == 1 and "not holding" in str(errors[0])
    assert not lock.locked()


async def test_lock_statistics_report_owner_and_waiters(virtual_clock):
    lock = braid.Lock()
    holder_info = []

    async def holder(release):
        holder_info.append(braid.get_current_task())
        async with lock:
            await release.wait()

    async def waiter():
        async with lock:
            pass

    release = braid.Event()
    async with braid.create_task_group() as tg:
        tg.start_soon(holder, release, name="holder")
        await settle()
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        await settle()
        st = lock.statistics()
        assert st.locked
        assert isinstance(st.owner, braid.TaskInfo)
        assert st.owner == holder_info[0]
        assert st.owner.name == "holder"
        assert st.tasks_waiting == 2
        release.set()
    assert lock.statistics() == braid.LockStatistics(False, None, 0)


async def test_lock_cancelled_waiter_leaves_the_queue_and_never_gets_the_lock(virtual_clock):
    lock = braid.Lock()
    scopes = []
    acquired = []

    async def waiter():
        with braid.CancelScope() as scope:
            scopes.append(scope)
            await lock.acquire()
            acquired.append(True)
        assert scope.cancelled_caught

    await lock.acquire()
    async with braid.create_task_group() as tg:
        tg.start_soon(waiter)
        await settle()
        assert lock.statistics().tasks_waiting == 1
        scopes[0].cancel()
        await settle()
        assert lock.statistics().tasks_waiting == 0
    lock.release()
    assert acquired == []
    assert not lock.locked()  # not handed to the cancelled waiter


async def test_lock_waiter_whose_deadline_passes_is_cancelled(virtual_clock):
    lock = braid.Lock()
    await lock.acquire()
    done = []

    async def waiter():
        with braid.move_on_after(5) as scope:
            await lock.acquire()
        done.append((scope.cancelled_caught, braid.current_time()))

    async with braid.create_task_group() as tg:
        tg.start_soon(waiter)
    assert done == [(True, 5.0)]
    assert lock.statistics().tasks_waiting == 0
    lock.release()
    assert not lock.locked()


async def test_lock_acquire_in_a_cancelled_scope_raises_even_when_free(virtual_clock):
    lock = braid.Lock()
    with braid.CancelScope() as scope:
        scope.cancel()
        await lock.acquire()
        pytest.fail("acquire() in a cancelled scope must raise Cancelled")
    assert scope.cancelled_caught
    assert not lock.locked()


async def test_lock_reacquire_by_its_owner_is_a_deadlock_error(virtual_clock):
    lock = braid.Lock()
    async with lock:
        with pytest.raises(braid.DeadlockError):
            await lock.acquire()
        with pytest.raises(braid.DeadlockError):
            lock.acquire_nowait()
        assert lock.statistics() == braid.LockStatistics(True, braid.get_current_task(), 0)
    assert issubclass(braid.DeadlockError, RuntimeError)
    assert not lock.locked()  # held once, released once


async def test_lock_cycle_between_a_task_and_a_worker_is_a_deadlock_error_with_detection_on():
    l1, l2 = braid.Lock(), braid.Lock()
    worker_holds_l2 = threading.Event()
    log = []

    def worker():
        with l2:
            worker_holds_l2.set()
            with l1:  # waits: the task holds l1
                log.append("worker got both")

    previous = _braid.braid_debug_deadlock(1)
    try:
        await l1.acquire()
        async with braid.create_task_group() as tg:
            tg.start_soon(braid.to_thread.run_sync, worker)
            await wait_until(lambda: worker_holds_l2.is_set() and l1.statistics().tasks_waiting == 1)
            with pytest.raises(braid.DeadlockError):
                await l2.acquire()  # l2's owner waits for l1, which we hold
            assert not l2.statistics().owner  # still the worker's (a thread, no task owner)
            assert l2.locked()
            l1.release()
        assert log == ["worker got both"]
    finally:
        _braid.braid_debug_deadlock(previous)
    assert not l1.locked() and not l2.locked()


async def test_lock_sync_with_in_a_task_is_refused():
    lock = braid.Lock()
    with pytest.raises(RuntimeError, match="plain threads"):
        with lock:
            pass
    with pytest.raises(RuntimeError, match="plain threads"):
        lock.acquire_blocking()
    assert not lock.locked()


async def test_lock_is_shared_between_a_task_and_a_worker_thread():
    lock = braid.Lock()
    worker_in = threading.Event()
    let_go = threading.Event()
    log = []

    def worker():
        with lock:
            log.append("worker in")
            worker_in.set()
            assert let_go.wait(10)
            log.append("worker out")

    async def task_waiter():
        async with lock:
            log.append("task in")

    await lock.acquire()
    async with braid.create_task_group() as tg:
        tg.start_soon(braid.to_thread.run_sync, worker)
        await wait_until(lambda: lock.statistics().tasks_waiting == 1)
        assert log == []  # the worker waits for us
        lock.release()
        await wait_until(worker_in.is_set)
        # the worker thread owns it now: locked, but not by a task
        assert lock.statistics() == braid.LockStatistics(True, None, 0)
        with pytest.raises(braid.WouldBlock):
            lock.acquire_nowait()
        tg.start_soon(task_waiter)
        await wait_until(lambda: lock.statistics().tasks_waiting == 1)
        let_go.set()
    assert log == ["worker in", "worker out", "task in"]
    assert not lock.locked()


async def test_lock_acquire_blocking_and_release_in_a_worker():
    lock = braid.Lock()

    def worker():
        lock.acquire_blocking()
        try:
            return lock.locked()
        finally:
            lock.release()

    assert await braid.to_thread.run_sync(worker) is True
    assert not lock.locked()
    await lock.acquire()

    def release_by_worker():
        lock.release()  # the worker thread is not the owner

    with pytest.raises(RuntimeError, match="not holding"):
        await braid.to_thread.run_sync(release_by_worker)
    assert lock.statistics().owner == braid.get_current_task()
    lock.release()


async def test_worker_blocked_on_a_lock_is_woken_by_cancellation_of_its_task():
    lock = braid.Lock()
    seen = []

    def worker():
        try:
            lock.acquire_blocking()
        except braid.Cancelled:
            seen.append("cancelled")
            raise
        seen.append("acquired")
        lock.release()

    async def child():
        await braid.to_thread.run_sync(worker)
        seen.append("child went on")

    await lock.acquire()
    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        await wait_until(lambda: lock.statistics().tasks_waiting == 1)
        tg.cancel_scope.cancel()
    assert seen == ["cancelled"]
    # the lock was not handed to the cancelled thread
    assert lock.statistics() == braid.LockStatistics(True, braid.get_current_task(), 0)
    lock.release()
    assert not lock.locked()


def test_lock_mutual_exclusion_between_plain_threads():
    lock = braid.Lock()
    state = {"count": 0, "inside": 0, "max_inside": 0}

    def work():
        for _ in range(200):
            with lock:
                state["inside"] += 1
                state["max_inside"] = max(state["max_inside"], state["inside"])
                c = state["count"]
                time.sleep(0)  # let the other threads run (and try to get in)
                state["count"] = c + 1
                state["inside"] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert state["count"] == 800
    assert state["max_inside"] == 1
    assert not lock.locked()


# ---- Semaphore --------------------------------------------------------------------------------------


async def test_semaphore_values_and_nowait(virtual_clock):
    sem = braid.Semaphore(2)
    assert sem.value == 2
    assert sem.max_value is None
    sem.acquire_nowait()
    sem.acquire_nowait()
    assert sem.value == 0
    with pytest.raises(braid.WouldBlock):
        sem.acquire_nowait()
    sem.release()
    assert sem.value == 1
    for _ in range(10):  # no bound
        sem.release()
    assert sem.value == 11


async def test_semaphore_max_value_bounds_release(virtual_clock):
    sem = braid.Semaphore(1, max_value=2)
    assert sem.max_value == 2
    sem.release()
    assert sem.value == 2
    with pytest.raises(ValueError):
        sem.release()
    assert sem.value == 2  # unchanged
    await sem.acquire()
    assert sem.value == 1


async def test_semaphore_release_at_max_with_a_waiter_hands_over(virtual_clock):
    sem = braid.Semaphore(1, max_value=1)
    got = []

    async def waiter():
        await sem.acquire()
        got.append(True)

    sem.acquire_nowait()
    async with braid.create_task_group() as tg:
        tg.start_soon(waiter)
        await settle()
        sem.release()  # handed to the waiter: the value stays 0, not refused
        assert sem.value == 0
    assert got == [True]
    sem.release()
    with pytest.raises(ValueError):
        sem.release()


def test_semaphore_bad_arguments():
    with pytest.raises(ValueError):
        braid.Semaphore(-1)
    with pytest.raises(TypeError):
        braid.Semaphore(1.5)
    with pytest.raises(ValueError):
        braid.Semaphore(3, max_value=2)
    with pytest.raises(TypeError):
        braid.Semaphore(1, max_value=2.0)


async def test_semaphore_waiters_are_woken_in_fifo_order_and_counted(virtual_clock):
    sem = braid.Semaphore(0)
    order = []

    async def waiter(i):
        await sem.acquire()
        order.append(i)

    async with braid.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(waiter, i)
            await settle()
        assert sem.statistics() == braid.SemaphoreStatistics(3)
        sem.release()
        await settle()
        assert order == [0]
        assert sem.statistics().tasks_waiting == 2
        sem.release()
        sem.release()
    assert order == [0, 1, 2]
    assert sem.value == 0


async def test_semaphore_async_with_returns_the_semaphore_and_releases(virtual_clock):
    sem = braid.Semaphore(1)
    async with sem as entered:
        assert entered is sem
        assert sem.value == 0
    assert sem.value == 1


async def test_semaphore_cancelled_waiter_takes_no_unit(virtual_clock):
    sem = braid.Semaphore(0)
    scopes = []

    async def waiter():
        with braid.CancelScope() as scope:
            scopes.append(scope)
            await sem.acquire()

    async with braid.create_task_group() as tg:
        tg.start_soon(waiter)
        await settle()
        assert sem.statistics().tasks_waiting == 1
        scopes[0].cancel()
    assert scopes[0].cancelled_caught
    assert sem.statistics().tasks_waiting == 0
    sem.release()
    assert sem.value == 1  # the unit was not given to the cancelled waiter


async def test_semaphore_acquire_blocking_in_a_worker_waits_for_a_release():
    sem = braid.Semaphore(0)
    got = threading.Event()

    def worker():
        with sem:  # thread side: acquire_blocking / release
            got.set()

    async with braid.create_task_group() as tg:
        tg.start_soon(braid.to_thread.run_sync, worker)
        await wait_until(lambda: sem.statistics().tasks_waiting == 1)
        assert not got.is_set()
        sem.release()
    assert got.is_set()
    assert sem.value == 1  # the worker's `with` gave it back


# ---- Event ------------------------------------------------------------------------------------------


async def test_event_set_wakes_every_waiter(virtual_clock):
    ev = braid.Event()
    assert not ev.is_set()
    woken = []

    async def waiter(i):
        await ev.wait()
        woken.append(i)

    async with braid.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(waiter, i)
        await settle()
        assert woken == []
        assert ev.statistics() == braid.EventStatistics(3)
        ev.set()
        assert ev.is_set()
        ev.set()  # idempotent
    assert woken == [0, 1, 2]  # FIFO
    assert ev.statistics().tasks_waiting == 0
    await ev.wait()  # later waits return at once


async def test_event_wait_on_a_set_event_is_still_a_checkpoint(virtual_clock):
    ev = braid.Event()
    ev.set()
    ran = []

    async def other():
        ran.append(True)

    async with braid.create_task_group() as tg:
        tg.start_soon(other)
        await ev.wait()  # yields: the other task runs
        assert ran == [True]
    with braid.CancelScope() as scope:
        scope.cancel()
        await ev.wait()
        pytest.fail("wait() on a set event in a cancelled scope must raise Cancelled")
    assert scope.cancelled_caught


async def test_event_cancelled_waiter_leaves_the_queue(virtual_clock):
    ev = braid.Event()
    with braid.move_on_after(3) as scope:
        await ev.wait()
    assert scope.cancelled_caught
    assert braid.current_time() == 3.0
    assert ev.statistics().tasks_waiting == 0
    assert not ev.is_set()


async def test_event_wait_blocking_in_a_worker_and_set_from_a_worker():
    ev = braid.Event()
    ev2 = braid.Event()

    def waiter():
        ev.wait_blocking()
        return "woken"

    async def run_waiter(results):
        results.append(await braid.to_thread.run_sync(waiter))

    results = []
    async with braid.create_task_group() as tg:
        tg.start_soon(run_waiter, results)
        await wait_until(lambda: ev.statistics().tasks_waiting == 1)
        assert results == []
        ev.set()
    assert results == ["woken"]
    # a worker sets an event a task waits for
    async with braid.create_task_group() as tg:
        tg.start_soon(braid.to_thread.run_sync, ev2.set)
        with braid.fail_after(10):
            await ev2.wait()
    assert ev2.is_set()


# ---- Condition --------------------------------------------------------------------------------------


async def test_condition_wait_releases_the_lock_and_reacquires_it(virtual_clock):
    cond = braid.Condition()
    log = []

    async def waiter(i):
        async with cond:
            log.append(("wait", i))
            await cond.wait()
            # owns the lock again
            assert cond.locked()
            assert cond.statistics().lock_statistics.owner == braid.get_current_task()
            log.append(("woken", i))

    async with braid.create_task_group() as tg:
        tg.start_soon(waiter, 0)
        await settle()
        assert not cond.locked()  # released while waiting
        assert cond.statistics().tasks_waiting == 1
        async with cond:
            cond.notify()
            await settle()
            assert log == [("wait", 0)]  # it cannot re-acquire while we hold the lock
            assert cond.statistics().lock_statistics.tasks_waiting == 1
    assert log == [("wait", 0), ("woken", 0)]
    assert not cond.locked()


async def test_condition_notify_n_and_notify_all_in_fifo_order(virtual_clock):
    cond = braid.Condition()
    woken = []

    async def waiter(i):
        async with cond:
            await cond.wait()
            woken.append(i)

    async with braid.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(waiter, i)
            await settle()
        assert cond.statistics().tasks_waiting == 5
        async with cond:
            cond.notify()
        await settle()
        assert woken == [0]
        async with cond:
            cond.notify(2)
        await settle()
        assert woken == [0, 1, 2]
        async with cond:
            cond.notify(0)
        await settle()
        assert woken == [0, 1, 2]
        async with cond:
            cond.notify_all()
    assert woken == [0, 1, 2, 3, 4]
    assert cond.statistics().tasks_waiting == 0


async def test_condition_notify_and_wait_without_the_lock_are_runtime_errors(virtual_clock):
    cond = braid.Condition()
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.notify_all()
    with pytest.raises(RuntimeError):
        await cond.wait()
    with pytest.raises(ValueError):
        async with cond:
            cond.notify(-1)
    assert not cond.locked()


async def test_condition_statistics(virtual_clock):
    lock = braid.Lock()
    cond = braid.Condition(lock)
    st = cond.statistics()
    assert st == braid.ConditionStatistics(0, braid.LockStatistics(False, None, 0))

    async def waiter():
        async with cond:
            await cond.wait()

    async with braid.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        await settle()
        await lock.acquire()  # the condition's lock is the one given
        assert cond.locked()
        st = cond.statistics()
        assert st.tasks_waiting == 2
        assert st.lock_statistics == braid.LockStatistics(True, braid.get_current_task(), 0)
        cond.notify_all()
        cond.release()
        await settle()
        assert cond.statistics().tasks_waiting == 0


async def test_condition_cancelled_wait_reacquires_the_lock_before_raising(virtual_clock):
    cond = braid.Condition()
    scopes = []
    log = []

    async def waiter():
        async with cond:
            with braid.CancelScope() as scope:
                scopes.append(scope)
                try:
                    await cond.wait()
                except braid.Cancelled:
                    log.append(cond.statistics().lock_statistics.owner == braid.get_current_task())
                    raise
            log.append(scope.cancelled_caught)

    async with braid.create_task_group() as tg:
        tg.start_soon(waiter)
        await settle()
        async with cond:  # hold the lock while the waiter is cancelled
            scopes[0].cancel()
            await settle()
            assert log == []  # still waiting for the lock
        await settle()
    assert log == [True, True]
    assert not cond.locked()


async def test_condition_wait_blocking_in_a_worker():
    cond = braid.Condition()
    log = []

    def worker():
        with cond:  # thread side: acquire_blocking / release of its lock
            log.append("waiting")
            cond.wait_blocking()
            log.append("woken")
            assert cond.locked()

    async with braid.create_task_group() as tg:
        tg.start_soon(braid.to_thread.run_sync, worker)
        await wait_until(lambda: cond.statistics().tasks_waiting == 1)
        async with cond:
            cond.notify()
    assert log == ["waiting", "woken"]
    assert not cond.locked()


async def test_condition_cancelled_wait_blocking_in_a_worker_reacquires_the_lock():
    lock = braid.Lock()
    cond = braid.Condition(lock)
    log = []

    def worker():
        cond.acquire_blocking()
        try:
            cond.wait_blocking()
        except braid.Cancelled:
            log.append(("cancelled, locked:", lock.locked()))
            raise
        finally:
            cond.release()

    scopes = []

    async def child():
        with braid.CancelScope() as scope:
            scopes.append(scope)
            await braid.to_thread.run_sync(worker)

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        await wait_until(lambda: cond.statistics().tasks_waiting == 1)
        await lock.acquire()  # hold the lock: the cancelled worker must wait for it
        scopes[0].cancel()
        await wait_until(lambda: lock.statistics().tasks_waiting == 1)
        assert log == []
        lock.release()
    assert scopes[0].cancelled_caught
    assert log == [("cancelled, locked:", True)]
    assert not lock.locked()


# ---- CapacityLimiter --------------------------------------------------------------------------------


async def test_limiter_tokens(virtual_clock):
    lim = braid.CapacityLimiter(2)
    assert lim.total_tokens == 2
    assert lim.borrowed_tokens == 0
    assert lim.available_tokens == 2
    async with lim:
        assert lim.borrowed_tokens == 1
        assert lim.available_tokens == 1
        st = lim.statistics()
        assert st.borrowed_tokens == 1
        assert st.total_tokens == 2
        assert st.borrowers == (braid.get_current_task(),)
        assert st.tasks_waiting == 0
    assert lim.available_tokens == 2
    assert lim.statistics().borrowers == ()


async def test_limiter_waiters_get_tokens_in_fifo_order(virtual_clock):
    lim = braid.CapacityLimiter(1)
    order = []

    async def user(i):
        async with lim:
            order.append(i)
            await braid.sleep(1)

    async with braid.create_task_group() as tg:
        await lim.acquire()
        for i in range(3):
            tg.start_soon(user, i)
            await settle()
        assert lim.statistics().tasks_waiting == 3
        with pytest.raises(braid.WouldBlock):
            lim.acquire_on_behalf_of_nowait(object())
        lim.release()
    assert order == [0, 1, 2]
    assert lim.borrowed_tokens == 0


async def test_limiter_total_tokens_setter(virtual_clock):
    lim = braid.CapacityLimiter(1)
    got = []

    async def user(i):
        async with lim:
            got.append(i)
            await braid.sleep_forever()

    async with braid.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(user, i)
        await settle()
        assert got == [0]
        assert lim.statistics().tasks_waiting == 3
        lim.total_tokens = 3  # raising the total wakes waiters
        await settle()
        assert got == [0, 1, 2]
        assert lim.available_tokens == 0
        lim.total_tokens = math.inf
        assert lim.total_tokens == math.inf
        await settle()
        assert got == [0, 1, 2, 3]
        assert lim.available_tokens == math.inf
        assert lim.statistics().total_tokens == math.inf
        lim.total_tokens = 1  # below the borrowed count: nobody loses a token
        assert lim.borrowed_tokens == 4
        assert lim.available_tokens == -3
        tg.cancel_scope.cancel()
    with pytest.raises(TypeError):
        lim.total_tokens = 1.5
    with pytest.raises(ValueError):
        lim.total_tokens = -1
    assert lim.total_tokens == 1
    with pytest.raises(TypeError):
        braid.CapacityLimiter(2.5)
    with pytest.raises(ValueError):
        braid.CapacityLimiter(-1)
    assert braid.CapacityLimiter(math.inf).available_tokens == math.inf


async def test_limiter_on_behalf_of_borrowers(virtual_clock):
    lim = braid.CapacityLimiter(3)
    a, b = object(), "b"
    await lim.acquire_on_behalf_of(a)
    lim.acquire_on_behalf_of_nowait(b)
    await lim.acquire()
    st = lim.statistics()
    assert st.borrowed_tokens == 3
    assert len(st.borrowers) == 3
    assert any(x is a for x in st.borrowers)
    assert any(x is b for x in st.borrowers)
    assert braid.get_current_task() in st.borrowers
    assert lim.available_tokens == 0
    lim.release_on_behalf_of(a)
    assert lim.borrowed_tokens == 2
    assert not any(x is a for x in lim.statistics().borrowers)
    lim.release_on_behalf_of(b)
    lim.release()
    assert lim.borrowed_tokens == 0
    assert lim.statistics().borrowers == ()


async def test_limiter_borrowing_twice_is_a_runtime_error(virtual_clock):
    lim = braid.CapacityLimiter(5)
    borrower = object()
    await lim.acquire()
    with pytest.raises(RuntimeError, match="already holding"):
        await lim.acquire()
    with pytest.raises(RuntimeError, match="already holding"):
        lim.acquire_nowait()
    await lim.acquire_on_behalf_of(borrower)
    with pytest.raises(RuntimeError, match="already holding"):
        await lim.acquire_on_behalf_of(borrower)
    with pytest.raises(RuntimeError, match="already holding"):
        lim.acquire_on_behalf_of_nowait(borrower)
    assert lim.borrowed_tokens == 2
    lim.release()
    lim.release_on_behalf_of(borrower)
    assert lim.borrowed_tokens == 0


async def test_limiter_releasing_a_token_not_borrowed_is_a_runtime_error(virtual_clock):
    lim = braid.CapacityLimiter(2)
    with pytest.raises(RuntimeError, match="isn't holding"):
        lim.release()
    with pytest.raises(RuntimeError, match="isn't holding"):
        lim.release_on_behalf_of(object())
    other = object()
    await lim.acquire_on_behalf_of(other)
    with pytest.raises(RuntimeError, match="isn't holding"):
        lim.release()  # the task is not a borrower: `other` is
    errors = []

    async def borrower_once():
        await lim.acquire()
        lim.release()
        try:
            lim.release()  # a second release: no longer a borrower
        except RuntimeError as exc:
            errors.append(exc)

    async with braid.create_task_group() as tg:
        tg.start_soon(borrower_once)
    assert len(errors) == 1
    assert lim.borrowed_tokens == 1
    lim.release_on_behalf_of(other)
    with pytest.raises(RuntimeError, match="isn't holding"):
        lim.release_on_behalf_of(other)
    assert lim.borrowed_tokens == 0


async def test_limiter_release_by_another_task_is_a_runtime_error(virtual_clock):
    lim = braid.CapacityLimiter(1)
    errors = []

    async def other():
        try:
            lim.release()
        except RuntimeError as exc:
            errors.append(exc)

    async with lim:
        async with braid.create_task_group() as tg:
            tg.start_soon(other)
        assert lim.borrowed_tokens == 1
        assert lim.statistics().borrowers == (braid.get_current_task(),)
    assert len(errors) == 1
    assert lim.borrowed_tokens == 0


async def test_limiter_cancelled_waiter_leaves_the_queue_without_a_token(virtual_clock):
    lim = braid.CapacityLimiter(1)
    await lim.acquire()
    with braid.move_on_after(2) as scope:
        await lim.acquire_on_behalf_of("late")
    assert scope.cancelled_caught
    assert lim.statistics().tasks_waiting == 0
    assert lim.borrowed_tokens == 1
    lim.release()
    assert lim.borrowed_tokens == 0


async def test_limiter_acquire_blocking_in_a_worker():
    lim = braid.CapacityLimiter(1)

    def worker():
        lim.acquire_blocking()
        try:
            st = lim.statistics()
            return st.borrowed_tokens, st.borrowers
        finally:
            lim.release()

    await lim.acquire()
    async with braid.create_task_group() as tg:
        results = []

        async def run():
            results.append(await braid.to_thread.run_sync(worker, limiter=braid.CapacityLimiter(1)))

        tg.start_soon(run)
        await wait_until(lambda: lim.statistics().tasks_waiting == 1)
        lim.release()
    borrowed, borrowers = results[0]
    assert borrowed == 1
    assert len(borrowers) == 1 and borrowers[0][0] == "thread"
    assert lim.borrowed_tokens == 0


async def test_limiter_statistics_list_every_borrower(virtual_clock):
    lim = braid.CapacityLimiter(1000)
    borrowers = [object() for _ in range(300)]
    for b in borrowers:
        lim.acquire_on_behalf_of_nowait(b)
    st = lim.statistics()
    assert st.borrowed_tokens == 300
    assert len(st.borrowers) == 300
    assert {id(b) for b in st.borrowers} == {id(b) for b in borrowers}
    for b in borrowers:
        lim.release_on_behalf_of(b)
    assert lim.statistics().borrowers == ()


async def test_limiter_does_not_keep_a_borrower_whose_acquisition_failed(virtual_clock):
    class Borrower:
        pass

    lim = braid.CapacityLimiter(0)
    refused, cancelled = Borrower(), Borrower()
    refs = [weakref.ref(refused), weakref.ref(cancelled)]
    with pytest.raises(braid.WouldBlock):
        lim.acquire_on_behalf_of_nowait(refused)
    with braid.move_on_after(1):
        await lim.acquire_on_behalf_of(cancelled)
    with pytest.raises(RuntimeError, match="isn't holding"):
        lim.release_on_behalf_of(refused)
    del refused, cancelled
    gc.collect()
    assert [r() for r in refs] == [None, None]
    # a failed second acquisition does not forget the token the borrower holds
    lim.total_tokens = 1
    holder = Borrower()
    lim.acquire_on_behalf_of_nowait(holder)
    with pytest.raises(RuntimeError, match="already holding"):
        lim.acquire_on_behalf_of_nowait(holder)
    with pytest.raises(RuntimeError, match="already holding"):
        await lim.acquire_on_behalf_of(holder)
    assert lim.statistics().borrowers == (holder,)
    lim.release_on_behalf_of(holder)
    assert lim.borrowed_tokens == 0


def test_a_plain_thread_blocked_on_a_lock_is_woken_by_cancelling_its_scope():
    lock = braid.Lock()
    scopes = []
    outcome = []

    def blocked():
        with braid.CancelScope() as scope:
            scopes.append(scope)
            lock.acquire_blocking()
            outcome.append("acquired")
        outcome.append(scope.cancelled_caught)

    lock.acquire_blocking()  # the main thread owns it
    t = threading.Thread(target=blocked)
    t.start()
    deadline = time.monotonic() + 10
    while lock.statistics().tasks_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lock.statistics().tasks_waiting == 1
    scopes[0].cancel()  # from another thread
    t.join(10)
    assert not t.is_alive()
    assert outcome == [True]
    assert lock.statistics() == braid.LockStatistics(True, None, 0)  # still the main thread's
    lock.release()
    assert not lock.locked()


async def test_limiter_with_statement_in_a_worker():
    lim = braid.CapacityLimiter(1)

    def worker():
        with lim:
            inside = lim.borrowed_tokens
        return inside, lim.borrowed_tokens

    assert await braid.to_thread.run_sync(worker) == (1, 0)
    async with lim:
        with pytest.raises(RuntimeError, match="plain threads"):
            with lim:
                pass
    assert lim.borrowed_tokens == 0
