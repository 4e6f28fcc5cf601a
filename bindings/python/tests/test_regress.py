"""Regressions found by reviewing the step driver (src/driver.c, src/braid.i) and braid/_core.py.
Each test failed before its fix."""

import gc
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import braid

BINDINGS = str(Path(braid.__file__).resolve().parent.parent)


def run_child(code):
    """Run `code` in a fresh Python with the braid under test; return its stdout (a use after
    free may crash or hang the process, so it is kept out of the test process)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = BINDINGS + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ---- a task name that is not UTF-8 encodable left UnicodeEncodeError set (SystemError later) -------


async def _started(task_status=braid.TASK_STATUS_IGNORED):
    task_status.started("ready")


async def test_task_names_that_are_not_utf8_encodable_are_accepted():
    names = []

    async def child():
        names.append(braid.get_current_task().name)
        await braid.checkpoint()

    async with braid.create_task_group() as tg:
        tg.start_soon(child, name="bad\udcff")  # was: SystemError, returned with an exception set
        assert await tg.start(_started, name="bad\udcff") == "ready"  # was: SystemError in another task
        await braid.checkpoint()
    assert names == ["bad\udcff"]


def test_run_accepts_a_main_whose_name_is_not_utf8_encodable():
    async def main():
        await braid.checkpoint()
        return 42

    main.__qualname__ = "main\udcff"
    assert braid.run(main) == 42  # was: SystemError at the first C call of the task


# ---- a shield flag whose truth value raises left the exception set ---------------------------------


class _BadBool:
    def __bool__(self):
        raise ZeroDivisionError("no truth value")


@pytest.mark.parametrize("make", [braid.move_on_after, braid.fail_after, braid.move_on_at, braid.fail_at])
async def test_a_shield_whose_truth_value_raises_raises_that_error(make):
    with pytest.raises(ZeroDivisionError):  # was: SystemError (returned a result with an exception set)
        make(1, _BadBool())


# ---- task_status.started(value) in a task not started with start() leaked value ------------------


async def test_started_in_a_task_that_was_not_started_does_not_leak_the_value():
    async def child(status, value):
        status.started(value)

    value = object()
    before = sys.getrefcount(value)
    braid.TaskStatus().started(value)
    async with braid.create_task_group() as tg:
        tg.start_soon(child, braid.TaskStatus(), value)
    assert sys.getrefcount(value) == before  # was: one reference leaked per call


async def test_started_still_hands_its_value_to_start_and_refuses_a_second_call():
    async def child(task_status=braid.TASK_STATUS_IGNORED):
        task_status.started("v")
        with pytest.raises(RuntimeError, match="twice"):
            task_status.started("w")

    async with braid.create_task_group() as tg:
        assert await tg.start(child) == "v"


# ---- a condition's handle did not keep its lock alive ---------------------------------------------


def test_a_condition_handle_keeps_its_lock_alive():
    out = run_child("""
        import gc, braid
        h = braid.Condition().handle   # the Condition and its Lock go away, the handle stays
        gc.collect()
        other = braid.Lock()           # took the freed lock's memory
        other.acquire_nowait()
        print(braid._braid.braid_condition_statistics(h)["lock"]["locked"])
    """)
    assert out.split() == ["False"]  # was: True (the condition used another Lock's memory)


# ---- the default thread limiter's handle outlived its loop -----------------------------------------


def test_the_default_thread_limiter_cannot_be_used_after_its_run():
    out = run_child("""
        import braid
        async def main():
            lim = braid.to_thread.current_default_thread_limiter()
            assert lim.total_tokens == 40
            return lim
        lim = braid.run(main)
        other = braid.CapacityLimiter(7)   # took the freed limiter's memory
        try:
            print(lim.total_tokens)
        except ValueError as e:
            print("ValueError", e)
        print(other.total_tokens)
    """)
    lines = out.splitlines()
    assert lines[0].startswith("ValueError") and "released" in lines[0]  # was: 7 (another limiter's)
    assert lines[1] == "7"


async def test_the_default_thread_limiter_still_works_during_its_run():
    lim = braid.to_thread.current_default_thread_limiter()
    lim.total_tokens = 2
    assert braid.to_thread.current_default_thread_limiter().total_tokens == 2
    assert await braid.to_thread.run_sync(lambda: 5, limiter=lim) == 5
    assert await braid.to_thread.run_sync(lambda: 6) == 6
    lim.total_tokens = 40


# ---- fail_after replaced the other errors of a group by TimeoutError -------------------------------


async def test_fail_after_lets_the_other_errors_of_a_group_through_as_anyio(virtual_clock):
    with pytest.raises(ExceptionGroup) as info:  # was: TimeoutError, the ValueError lost
        with braid.fail_after(1) as scope:
            try:
                await braid.sleep_forever()
            except braid.Cancelled as exc:
                raise BaseExceptionGroup("mixed", [exc, ValueError("real error")])
    assert scope.cancelled_caught
    assert [type(e) for e in info.value.exceptions] == [ValueError]

    with pytest.raises(TimeoutError):  # only cancellations: still a timeout
        with braid.fail_after(1):
            try:
                await braid.sleep_forever()
            except braid.Cancelled as exc:
                raise BaseExceptionGroup("only cancellations", [exc])


# ---- start()/start_soon() on a group closed to new arrivals ----------------------------------------


async def test_start_on_a_closing_group_says_it_is_not_active_and_closes_the_coroutine():
    async def child(task_status=braid.TASK_STATUS_IGNORED):
        task_status.started()

    errors = []

    async def late(tg):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                await tg.start(child)
            except RuntimeError as e:
                errors.append(str(e))
            try:
                tg.start_soon(child)
            except RuntimeError as e:
                errors.append(str(e))
            gc.collect()
        errors.extend(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))

    async with braid.create_task_group() as outer:
        async with braid.create_task_group() as inner:
            outer.start_soon(late, inner)  # runs while inner's exit yields, with no child left
    # was: "child exited without calling task_status.started()" and two "never awaited" warnings
    assert errors == ["This task group is not active; no new tasks can be started."] * 2


# ---- a task group re-raised the Cancelled its own scope had caught inside its failures --------------


async def _cancelled_into_group(*others):
    try:
        await braid.sleep_forever()
    except braid.Cancelled as exc:
        raise BaseExceptionGroup("wrapped", [exc, *others])


async def test_a_task_group_catches_the_cancellations_inside_its_failures_as_anyio():
    try:
        async with braid.create_task_group() as tg:
            tg.start_soon(_cancelled_into_group, ValueError("v"))
            await braid.checkpoint()
            tg.cancel_scope.cancel()
    except* ValueError:
        pass  # was: a stray BaseExceptionGroup([Cancelled]) escaped here and ended the run
    with pytest.raises(ExceptionGroup) as info:  # was: BaseExceptionGroup, the Cancelled inside
        async with braid.create_task_group() as tg:
            tg.start_soon(_cancelled_into_group, ValueError("v"))
            await braid.checkpoint()
            tg.cancel_scope.cancel()
    [inner] = info.value.exceptions
    assert [type(e) for e in inner.exceptions] == [ValueError]


async def test_a_childs_cancellation_wrapped_in_a_group_is_caught_by_its_cancelled_group():
    async with braid.create_task_group() as tg:  # was: BaseExceptionGroup[BaseExceptionGroup[Cancelled]]
        tg.start_soon(_cancelled_into_group)
        await braid.checkpoint()
        tg.cancel_scope.cancel()


async def test_with_an_outer_cancellation_the_cancelled_in_failures_reach_the_outer_scope(virtual_clock):
    with pytest.raises(ExceptionGroup) as info:
        with braid.move_on_after(1) as outer:
            async with braid.create_task_group() as tg:
                tg.start_soon(_cancelled_into_group, ValueError("v"))
                await braid.sleep_forever()
    assert outer.cancelled_caught
    [inner] = info.value.exceptions
    assert [type(e) for e in inner.exceptions] == [ValueError]


# ---- an abandoned to_thread call cancelled while it waited for its token was never freed ------------


async def test_an_abandoned_thread_call_cancelled_before_its_token_releases_fn_and_args(virtual_clock):
    lim = braid.CapacityLimiter(0)  # no token: the call waits in the limiter's queue
    payload = object()
    before = sys.getrefcount(payload)
    for _ in range(3):
        with braid.move_on_after(1) as scope:
            await braid.to_thread.run_sync(lambda p: None, payload, abandon_on_cancel=True, limiter=lim)
        assert scope.cancelled_caught
    gc.collect()
    assert sys.getrefcount(payload) == before  # was: one leaked job (fn, args, a loop) per call


async def test_thread_calls_cancelled_at_any_stage_release_everything():
    lim = braid.CapacityLimiter(2)
    payload = object()
    before = sys.getrefcount(payload)
    ran = []

    def work(p, i):
        time.sleep(0.002)
        ran.append(i)
        return i

    async def one(i):
        with braid.move_on_after(0.001 * (i % 5)):  # in the token queue, queued, running, or done
            assert await braid.to_thread.run_sync(work, payload, i, abandon_on_cancel=bool(i % 2),
                                                  limiter=lim) == i

    async with braid.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(one, i)
    while lim.borrowed_tokens:  # abandoned calls still running
        await braid.sleep(0.005)
    await braid.sleep(0.01)
    gc.collect()
    assert ran and sys.getrefcount(payload) == before


async def test_closing_a_waiting_tasks_coroutine_from_outside_does_not_free_its_operation(virtual_clock):
    # misuse: another task closes the coroutine of a task blocked in receive();
    # the operation braid writes the item into must stay alive until the task
    # is stepped again (it then ends: its coroutine is gone)
    import gc
    import weakref

    send, receive = braid.create_memory_object_stream(1)
    coro_box = []

    class Item:
        pass

    async def receiver():
        coro_box.append(braid.get_current_task().coro)
        await receive.receive()

    item = Item()
    ref = weakref.ref(item)
    with pytest.raises(BaseExceptionGroup):
        async with braid.create_task_group() as tg:
            tg.start_soon(receiver)
            await braid.sleep(1)
            coro_box[0].close()  # the frame and its reference to the operation are gone
            gc.collect()
            await send.send(item)  # braid writes the item into the operation now
            del item
            await braid.sleep(1)
    gc.collect()
    assert ref() is None  # delivered to nobody, and released
