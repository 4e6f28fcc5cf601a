"""The thread bridge: to_thread, from_thread and blocking portals (mirrors
tests/c/test_bridge.c and test_portal.c).

These tests run on the real clock: worker threads are synchronized with
threading.Event gates, and every wait has a deadline (``wait_until``, ``fail_after``,
``join(timeout)``, ``Future.result(timeout)``) so that a hang is a failure.
"""

import concurrent.futures
import gc
import threading
import time
import warnings

import pytest

import braid
from braid import from_thread, to_thread
from support import wait_until

TIMEOUT = 10


def call_with_timeout(fn, *args, timeout=TIMEOUT):
    """Call fn(*args) on a helper thread; fail (instead of hanging) if it does not return."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn!r} did not return within {timeout} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ---- to_thread.run_sync -----------------------------------------------------------------------------


async def test_run_sync_returns_the_result_and_passes_the_arguments():
    assert await to_thread.run_sync(pow, 2, 10) == 1024
    assert await to_thread.run_sync(lambda *a: a, 1, "two", None) == (1, "two", None)
    assert await to_thread.run_sync(lambda: None) is None


async def test_run_sync_runs_in_another_thread():
    loop_thread = threading.get_ident()
    ident = await to_thread.run_sync(threading.get_ident)
    assert ident != loop_thread


async def test_run_sync_propagates_the_exception():
    err = KeyError("boom")

    def fail():
        raise err

    with pytest.raises(KeyError) as info:
        await to_thread.run_sync(fail)
    assert info.value is err
    assert any(frame.name == "fail" for frame in __import__("traceback").extract_tb(info.value.__traceback__))

    def base():
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        await to_thread.run_sync(base)
    # the loop goes on
    assert await to_thread.run_sync(len, "abc") == 3


async def test_run_sync_lets_other_tasks_run_while_it_waits():
    gate = threading.Event()
    log = []

    async def other():
        log.append("other ran")
        gate.set()

    async with braid.create_task_group() as tg:
        tg.start_soon(other)
        assert await to_thread.run_sync(gate.wait, TIMEOUT) is True
    assert log == ["other ran"]


def test_run_sync_outside_a_loop_is_a_runtime_error():
    with pytest.raises(RuntimeError):
        to_thread.run_sync(len, "x")


async def test_run_sync_in_a_cancelled_scope_does_not_run_the_function():
    ran = []
    with braid.CancelScope() as scope:
        scope.cancel()
        await to_thread.run_sync(ran.append, 1)
        pytest.fail("to_thread.run_sync() in a cancelled scope must raise Cancelled")
    assert scope.cancelled_caught
    assert ran == []


async def test_limiter_bounds_the_threads_that_run_at_once():
    limiter = braid.CapacityLimiter(2)
    gate = threading.Event()
    lock = threading.Lock()
    state = {"active": 0, "max": 0, "done": 0}

    def job():
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        assert gate.wait(TIMEOUT)
        with lock:
            state["active"] -= 1
            state["done"] += 1

    async with braid.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(lambda: to_thread.run_sync(job, limiter=limiter))
        await wait_until(lambda: state["active"] == 2 and limiter.statistics().tasks_waiting == 3)
        assert limiter.borrowed_tokens == 2
        gate.set()
    assert state == {"active": 0, "max": 2, "done": 5}
    assert limiter.borrowed_tokens == 0


async def test_default_thread_limiter_has_40_tokens_and_is_used_by_default():
    default = to_thread.current_default_thread_limiter()
    assert default.total_tokens == 40
    gate = threading.Event()
    started = threading.Event()

    def job():
        started.set()
        return gate.wait(TIMEOUT)

    async with braid.create_task_group() as tg:
        tg.start_soon(to_thread.run_sync, job)
        await wait_until(started.is_set)
        assert to_thread.current_default_thread_limiter().borrowed_tokens == 1
        gate.set()
    assert default.borrowed_tokens == 0


async def test_default_thread_limiter_is_settable():
    default = to_thread.current_default_thread_limiter()
    default.total_tokens = 1
    assert to_thread.current_default_thread_limiter().total_tokens == 1
    gate = threading.Event()
    lock = threading.Lock()
    state = {"active": 0, "max": 0}

    def job():
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        gate.wait(TIMEOUT)
        with lock:
            state["active"] -= 1

    async with braid.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(to_thread.run_sync, job)
        await wait_until(lambda: state["active"] == 1 and default.statistics().tasks_waiting == 2)
        gate.set()
    assert state["max"] == 1


async def test_waiting_for_a_token_is_cancellable_and_the_function_never_runs():
    limiter = braid.CapacityLimiter(1)
    ran = []
    await limiter.acquire()
    async with braid.create_task_group() as tg:
        tg.start_soon(lambda: to_thread.run_sync(ran.append, 1, limiter=limiter))
        await wait_until(lambda: limiter.statistics().tasks_waiting == 1)
        tg.cancel_scope.cancel()
    assert ran == []
    assert limiter.statistics().tasks_waiting == 0
    limiter.release()
    assert limiter.borrowed_tokens == 0


async def test_abandon_on_cancel_resumes_the_task_at_once_and_drops_the_result():
    limiter = braid.CapacityLimiter(1)
    started, gate, finished = threading.Event(), threading.Event(), threading.Event()
    scopes = []
    log = []

    def fn():
        started.set()
        gate.wait(TIMEOUT)
        finished.set()
        return "dropped"

    async def child():
        with braid.CancelScope() as scope:
            scopes.append(scope)
            log.append(await to_thread.run_sync(fn, abandon_on_cancel=True, limiter=limiter))
        log.append(("resumed", scope.cancelled_caught, finished.is_set()))

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        await wait_until(started.is_set)
        scopes[0].cancel()
    # the task resumed while fn was still blocked on the gate
    assert log == [("resumed", True, False)]
    # braid keeps the token until fn really returns
    assert limiter.borrowed_tokens == 1
    gate.set()
    assert finished.wait(TIMEOUT)
    await wait_until(lambda: limiter.borrowed_tokens == 0)
    assert log == [("resumed", True, False)]


async def test_cancellable_is_the_old_name_of_abandon_on_cancel():
    started, gate, finished = threading.Event(), threading.Event(), threading.Event()

    def fn():
        started.set()
        gate.wait(TIMEOUT)
        finished.set()

    with braid.CancelScope() as scope:
        async with braid.create_task_group() as tg:
            tg.start_soon(lambda: to_thread.run_sync(fn, cancellable=True))
            await wait_until(started.is_set)
            scope.cancel()
    fn_still_blocked = not finished.is_set()  # the task did not wait for fn
    gate.set()
    assert scope.cancelled_caught
    assert fn_still_blocked
    assert finished.wait(TIMEOUT)


async def test_without_abandon_the_task_waits_for_the_function_then_raises_cancelled():
    started, gate = threading.Event(), threading.Event()
    scopes = []
    log = []

    def fn():
        started.set()
        gate.wait(TIMEOUT)
        log.append("fn returned")
        return "result"

    async def child():
        with braid.CancelScope() as scope:
            scopes.append(scope)
            try:
                log.append(await to_thread.run_sync(fn, abandon_on_cancel=False))
            except braid.Cancelled:
                log.append("task cancelled")
                raise
        assert scope.cancelled_caught

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        await wait_until(started.is_set)
        scopes[0].cancel()
        await braid.sleep(0.02)  # plenty of time for a wrong implementation to resume the task
        assert log == []
        gate.set()
    assert log == ["fn returned", "task cancelled"]


async def test_cancellation_is_visible_in_the_worker_through_check_cancelled():
    started, cancelled_now = threading.Event(), threading.Event()
    seen = []

    def fn():
        from_thread.check_cancelled()  # not cancelled yet: returns
        seen.append("not cancelled")
        started.set()
        assert cancelled_now.wait(TIMEOUT)
        try:
            from_thread.check_cancelled()
        except braid.Cancelled:
            seen.append("cancelled")

    async with braid.create_task_group() as tg:
        tg.start_soon(to_thread.run_sync, fn)
        await wait_until(started.is_set)
        tg.cancel_scope.cancel()
        cancelled_now.set()
    assert seen == ["not cancelled", "cancelled"]
    # the next job on a (reused) worker starts clean
    for _ in range(3):
        assert await to_thread.run_sync(from_thread.check_cancelled) is None


async def test_cancellation_reaches_a_worker_waiting_on_braid_primitives():
    ev = braid.Event()
    sem = braid.Semaphore(0)
    seen = []

    def wait_on(name, wait):
        try:
            wait()
        except braid.Cancelled:
            seen.append(name)
            raise

    async with braid.create_task_group() as tg:
        tg.start_soon(to_thread.run_sync, wait_on, "event", ev.wait_blocking)
        tg.start_soon(to_thread.run_sync, wait_on, "semaphore", sem.acquire_blocking)
        await wait_until(lambda: ev.statistics().tasks_waiting == 1 and sem.statistics().tasks_waiting == 1)
        tg.cancel_scope.cancel()
    assert sorted(seen) == ["event", "semaphore"]
    assert ev.statistics().tasks_waiting == 0 and sem.statistics().tasks_waiting == 0
    assert sem.value == 0


# ---- from_thread ------------------------------------------------------------------------------------


async def test_from_thread_run_sync_from_a_worker_runs_on_the_loop_thread():
    loop_thread = threading.get_ident()

    def worker():
        return from_thread.run_sync(lambda x: (threading.get_ident(), x * 2), 21)

    ident, value = await to_thread.run_sync(worker)
    assert value == 42
    assert ident == loop_thread


async def test_from_thread_run_sync_propagates_the_exception():
    err = ValueError("from the loop thread")

    def fail():
        raise err

    with pytest.raises(ValueError) as info:
        await to_thread.run_sync(from_thread.run_sync, fail)
    assert info.value is err


async def test_from_thread_run_from_a_worker_runs_a_task_on_the_loop():
    loop_thread = threading.get_ident()
    me = braid.get_current_task()
    ev = braid.Event()

    async def afn(x):
        await braid.sleep(0)
        ev.set()
        return threading.get_ident(), braid.get_current_task(), x + 1

    ident, task, value = await to_thread.run_sync(from_thread.run, afn, 1)
    assert value == 2
    assert ident == loop_thread
    assert isinstance(task, braid.TaskInfo) and task != me
    assert ev.is_set()


async def test_from_thread_run_propagates_the_exception():
    err = LookupError("from the task")

    async def afail():
        await braid.sleep(0)
        raise err

    with pytest.raises(LookupError) as info:
        await to_thread.run_sync(from_thread.run, afail)
    assert info.value is err


async def test_cancelling_the_workers_task_cancels_its_from_thread_run_task():
    started = threading.Event()
    log = []

    async def forever():
        started.set()
        try:
            await braid.sleep_forever()
        except braid.Cancelled:
            log.append("task cancelled")
            raise

    def worker():
        try:
            from_thread.run(forever)
        except braid.Cancelled:
            log.append("worker saw Cancelled")
            raise

    async with braid.create_task_group() as tg:
        tg.start_soon(to_thread.run_sync, worker)
        await wait_until(started.is_set)
        tg.cancel_scope.cancel()
    assert log == ["task cancelled", "worker saw Cancelled"]


async def test_from_thread_run_sync_in_a_cancelled_worker_does_not_run_the_function():
    started, cancelled_now = threading.Event(), threading.Event()
    ran = []
    seen = []

    def worker():
        started.set()
        assert cancelled_now.wait(TIMEOUT)
        try:
            from_thread.run_sync(ran.append, 1)
        except braid.Cancelled:
            seen.append("cancelled")

    async with braid.create_task_group() as tg:
        tg.start_soon(to_thread.run_sync, worker)
        await wait_until(started.is_set)
        tg.cancel_scope.cancel()
        cancelled_now.set()
    assert seen == ["cancelled"]
    assert ran == []


async def test_from_thread_calls_on_the_loop_thread_are_runtime_errors():
    async def afn():
        return 1

    with pytest.raises(RuntimeError, match="event loop thread"):
        from_thread.run_sync(len, "x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="event loop thread"):
            from_thread.run(afn)
        gc.collect()
    # the refused call does not leave a coroutine that was never awaited behind
    assert not [w for w in caught if "never awaited" in str(w.message)]
    with pytest.raises(RuntimeError, match="event loop thread"):
        from_thread.check_cancelled()
    token = from_thread.current_token()
    with pytest.raises(RuntimeError):
        from_thread.run_sync(len, "x", token=token)


def test_from_thread_without_a_loop_or_token_is_a_runtime_error():
    async def afn():
        return 1

    with pytest.raises(RuntimeError):
        from_thread.run_sync(len, "x")
    with pytest.raises(RuntimeError):
        from_thread.current_token()
    errors = []

    def thread_main():
        for call in (lambda: from_thread.run_sync(len, "x"), lambda: from_thread.run(afn)):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)

    t = threading.Thread(target=thread_main)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert len(errors) == 2


async def test_a_plain_thread_without_a_token_is_refused_while_a_loop_runs():
    outcome = []
    done = braid.Event()

    def thread_main():
        try:
            from_thread.run_sync(len, "x")
        except RuntimeError as exc:
            outcome.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=thread_main)
    t.start()
    with braid.fail_after(TIMEOUT):
        await done.wait()
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError)


async def test_current_token_lets_a_plain_thread_call_into_the_loop():
    token = from_thread.current_token()
    loop_thread = threading.get_ident()
    done = braid.Event()
    results = {}

    async def afn(x):
        await braid.sleep(0)
        return x + 1, threading.get_ident()

    def fail():
        raise ArithmeticError("sync failure")

    def thread_main():
        try:
            results["sync"] = from_thread.run_sync(threading.get_ident, token=token)
            results["async"] = from_thread.run(afn, 1, token=token)
            try:
                from_thread.run_sync(fail, token=token)
            except ArithmeticError as exc:
                results["error"] = str(exc)
        finally:
            done.set()

    t = threading.Thread(target=thread_main)
    t.start()
    with braid.fail_after(TIMEOUT):
        await done.wait()
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert results == {"sync": loop_thread, "async": (2, loop_thread), "error": "sync failure"}


def test_a_token_of_an_ended_loop_is_refused():
    async def main():
        return from_thread.current_token()

    token = braid.run(main)

    async def afn():
        return 1

    with pytest.raises(braid.ClosedResourceError):
        from_thread.run_sync(len, "x", token=token)
    with pytest.raises(braid.ClosedResourceError):
        from_thread.run(afn, token=token)


# ---- blocking portals -------------------------------------------------------------------------------


def test_portal_call_runs_sync_and_async_functions_on_its_thread():
    async def afn(x):
        await braid.sleep(0.001)
        return x * 3, threading.get_ident()

    with braid.start_blocking_portal() as portal:
        ident = portal.call(threading.get_ident)
        assert ident != threading.get_ident()
        assert portal.call(pow, 3, 2) == 9
        assert portal.call(afn, 5) == (15, ident)
        assert portal.call(braid.current_time) >= 0


def test_portal_call_propagates_exceptions():
    async def afail():
        await braid.sleep(0)
        raise ValueError("async failure")

    def fail():
        raise KeyError("sync failure")

    with braid.start_blocking_portal() as portal:
        with pytest.raises(ValueError, match="async failure"):
            portal.call(afail)
        with pytest.raises(KeyError, match="sync failure"):
            portal.call(fail)
        assert portal.call(len, "still running") == 13


def test_portal_start_task_soon_returns_a_future_with_the_result():
    async def afn(x):
        await braid.sleep(0.001)
        return x + 1

    with braid.start_blocking_portal() as portal:
        future = portal.start_task_soon(afn, 41)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(TIMEOUT) == 42
        assert not future.cancelled()


def test_portal_start_task_soon_future_carries_the_exception():
    err = RuntimeError("task failure")

    async def afail():
        await braid.sleep(0)
        raise err

    with braid.start_blocking_portal() as portal:
        future = portal.start_task_soon(afail)
        assert future.exception(TIMEOUT) is err
        with pytest.raises(RuntimeError, match="task failure"):
            future.result(0)
        assert portal.call(len, "ok") == 2  # the failure did not end the portal


def test_portal_future_cancel_cancels_the_task():
    started, cleaned_up = threading.Event(), threading.Event()

    async def forever():
        started.set()
        try:
            await braid.sleep_forever()
        finally:
            cleaned_up.set()

    with braid.start_blocking_portal() as portal:
        future = portal.start_task_soon(forever)
        assert started.wait(TIMEOUT)
        assert future.cancel()
        assert future.cancelled()
        assert cleaned_up.wait(TIMEOUT)
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(TIMEOUT)


def test_portal_start_task_soon_names_the_task():
    async def name_of_task():
        await braid.sleep(0)
        return braid.get_current_task().name

    with braid.start_blocking_portal() as portal:
        assert portal.start_task_soon(name_of_task, name="portal-task").result(TIMEOUT) == "portal-task"


def test_portal_future_of_a_finished_task_cannot_be_cancelled():
    async def afn():
        return "done"

    with braid.start_blocking_portal() as portal:
        future = portal.start_task_soon(afn)
        assert future.result(TIMEOUT) == "done"
        assert not future.cancel()
        assert future.result(0) == "done"


def test_portal_futures_work_with_concurrent_futures_wait():
    started = threading.Event()

    async def forever():
        started.set()
        await braid.sleep_forever()

    async def quick(x):
        await braid.sleep(0)
        return x

    with braid.start_blocking_portal() as portal:
        slow = portal.start_task_soon(forever)
        fast = portal.start_task_soon(quick, 7)
        assert started.wait(TIMEOUT)
        assert slow.cancel()
        done, not_done = concurrent.futures.wait([slow, fast], timeout=TIMEOUT)
        assert done == {slow, fast} and not not_done
        assert slow.cancelled() and fast.result(0) == 7


def test_portal_stop_with_cancel_remaining_cancels_running_tasks():
    started, cleaned_up = threading.Event(), threading.Event()

    async def forever():
        started.set()
        try:
            await braid.sleep_forever()
        finally:
            cleaned_up.set()

    portal = braid.BlockingPortal()
    future = portal.start_task_soon(forever)
    assert started.wait(TIMEOUT)
    call_with_timeout(portal.stop, True)
    assert cleaned_up.is_set()
    assert future.done()
    assert future.cancelled()


def test_portal_stop_without_cancel_waits_for_running_tasks():
    started, gate = threading.Event(), threading.Event()

    async def job():
        started.set()
        await to_thread.run_sync(gate.wait, TIMEOUT)
        return "finished"

    portal = braid.BlockingPortal()
    future = portal.start_task_soon(job)
    assert started.wait(TIMEOUT)
    stopper = threading.Thread(target=portal.stop, daemon=True)
    stopper.start()
    stopper.join(0.05)
    assert stopper.is_alive()  # stop() waits for the task
    assert not future.done()
    gate.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert future.result(0) == "finished"


def test_portal_calls_after_stop_are_errors():
    async def afn():
        return 1

    portal = braid.BlockingPortal()
    assert portal.call(afn) == 1
    call_with_timeout(portal.stop)
    with pytest.raises(RuntimeError):
        portal.call(afn)
    with pytest.raises(RuntimeError):
        portal.call(len, "x")
    with pytest.raises(RuntimeError):
        portal.start_task_soon(afn)
    call_with_timeout(portal.stop)  # idempotent


def test_start_blocking_portal_leaving_with_an_exception_cancels_the_tasks():
    started = threading.Event()
    futures = []

    async def forever():
        started.set()
        await braid.sleep_forever()

    def body():
        with braid.start_blocking_portal() as portal:
            futures.append(portal.start_task_soon(forever))
            assert started.wait(TIMEOUT)
            raise LookupError("leaving")

    with pytest.raises(LookupError):
        call_with_timeout(body)
    assert futures[0].cancelled()


def test_portal_task_uses_a_worker_that_calls_back_into_the_portal():
    def worker():
        return from_thread.run_sync(lambda: threading.get_ident())

    async def task():
        return threading.get_ident(), await to_thread.run_sync(worker)

    with braid.start_blocking_portal() as portal:
        loop_ident, called_back_on = portal.call(task)
    assert loop_ident == called_back_on


def test_portal_is_callable_from_several_threads_at_once():
    async def afn(x):
        await braid.sleep(0.001)
        return x * x

    with braid.start_blocking_portal() as portal:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda x: portal.call(afn, x), range(32), timeout=TIMEOUT))
    assert results == [x * x for x in range(32)]


def test_retired_workers_release_their_python_thread_state():
    # workers keep a Python thread state while they live; when an idle worker
    # retires (here after 20 ms) the state is deleted on its way out, and new
    # workers start cleanly
    from braid import _braid

    async def main():
        return [await braid.to_thread.run_sync(threading.get_ident) for _ in range(3)]

    old = _braid.braid_set_worker_idle_timeout(20_000_000)
    try:
        first = braid.run(main)
        for _ in range(500):
            if _braid.braid_worker_statistics()["alive"] == 0:
                break
            time.sleep(0.01)
        assert _braid.braid_worker_statistics()["alive"] == 0
        second = braid.run(main)
        assert len(first) == 3 and len(second) == 3
    finally:
        _braid.braid_set_worker_idle_timeout(old)
