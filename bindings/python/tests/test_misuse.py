"""Misuse gives clear errors and never hangs: foreign awaitables, braid calls outside
braid.run, misnested or reused cancel scopes, operations awaited twice."""

import asyncio

import pytest
import trio

import braid
from braid import CancelScope

# ---- foreign awaitables inside braid ---------------------------------------------------------------


async def test_awaiting_an_asyncio_future_is_a_type_error_naming_it():
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        with pytest.raises(TypeError, match=r"yielded <Future pending>.*not a braid operation"):
            await fut
    finally:
        loop.close()
    await braid.sleep(0)  # the task goes on


async def test_awaiting_asyncio_sleep_zero_is_a_type_error_naming_what_it_yielded():
    with pytest.raises(TypeError, match=r"yielded None.*not a braid operation"):
        await asyncio.sleep(0)
    await braid.checkpoint()


async def test_awaiting_a_trio_checkpoint_is_a_type_error_naming_the_trap():
    with pytest.raises(TypeError, match=r"yielded .*CancelShieldedCheckpoint.*not a braid operation"):
        await trio.sleep(0)
    with pytest.raises(TypeError, match="CancelShieldedCheckpoint"):
        await trio.lowlevel.checkpoint()
    await braid.checkpoint()


async def test_the_type_error_message_points_at_other_event_loops():
    with pytest.raises(TypeError) as info:
        await asyncio.sleep(0)
    assert "asyncio" in str(info.value) and "braid.run" in str(info.value)


class _YieldsOnce:
    def __init__(self, value):
        self.value = value

    def __await__(self):
        return (yield self.value)


async def test_a_custom_awaitable_yielding_junk_is_a_type_error_with_its_repr():
    with pytest.raises(TypeError, match=r"yielded \('junk', 42\)"):
        await _YieldsOnce(("junk", 42))


class _BadRepr:
    def __repr__(self):
        raise ZeroDivisionError("repr failed")


async def test_an_object_whose_repr_fails_still_gives_an_error_not_a_hang():
    with pytest.raises(ZeroDivisionError, match="repr failed"):
        await _YieldsOnce(_BadRepr())
    await braid.checkpoint()


async def test_the_task_can_catch_the_error_and_go_on_with_braid(virtual_clock):
    log = []
    for _ in range(3):
        try:
            await asyncio.sleep(0)
        except TypeError:
            log.append("caught")
        await braid.sleep(1)
    assert log == ["caught"] * 3
    assert braid.current_time() == 3.0


async def test_a_foreign_await_in_a_child_fails_the_group_without_hanging(virtual_clock):
    async def child():
        await asyncio.sleep(0)

    async def sibling():
        await braid.sleep_forever()

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(sibling)
            tg.start_soon(child)
    (exc,) = info.value.exceptions
    assert isinstance(exc, TypeError) and "not a braid operation" in str(exc)


async def test_a_foreign_await_inside_a_cancelled_scope_is_still_a_type_error():
    with CancelScope() as scope:
        scope.cancel()
        with pytest.raises(TypeError):
            await asyncio.sleep(0)
        await braid.checkpoint()
    assert scope.cancelled_caught


# ---- braid outside braid.run --------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, what",
    [
        (braid.current_time, "current_time"),
        (braid.current_effective_deadline, "current_effective_deadline"),
        (braid.get_current_task, "get_current_task"),
        (braid.get_running_tasks, "get_running_tasks"),
        (lambda: braid.move_on_after(5), "move_on_after"),
        (lambda: braid.fail_after(5), "fail_after"),
    ],
    ids=["current_time", "current_effective_deadline", "get_current_task", "get_running_tasks",
         "move_on_after", "fail_after"],
)
def test_braid_calls_outside_run_are_runtime_errors_that_say_so(call, what):
    with pytest.raises(RuntimeError, match=rf"{what}.*needs a running braid event loop.*braid\.run"):
        call()


def _run_on_asyncio(coro_fn):
    async def main():
        return await coro_fn()

    return asyncio.run(main())


def test_awaiting_braid_sleep_outside_run_is_a_runtime_error():
    async def use():
        await braid.sleep(1)

    with pytest.raises(RuntimeError, match="needs a running braid event loop"):
        _run_on_asyncio(use)
    with pytest.raises(RuntimeError, match="needs a running braid event loop"):
        trio.run(use)


@pytest.mark.parametrize(
    "make",
    [braid.checkpoint, braid.sleep_forever, lambda: braid.sleep(0), lambda: braid.sleep_until(5),
     braid.checkpoint_if_cancelled, braid.cancel_shielded_checkpoint],
    ids=["checkpoint", "sleep_forever", "sleep0", "sleep_until", "checkpoint_if_cancelled",
         "cancel_shielded_checkpoint"],
)
def test_awaiting_any_braid_operation_outside_run_is_a_runtime_error(make):
    async def use():
        await make()

    with pytest.raises(RuntimeError, match="needs a running braid event loop"):
        _run_on_asyncio(use)


def test_entering_a_task_group_outside_run_is_a_runtime_error():
    async def use():
        async with braid.create_task_group():
            pass

    with pytest.raises(RuntimeError, match="create_task_group.*needs a running braid event loop"):
        _run_on_asyncio(use)


def test_awaiting_lock_acquire_outside_run_is_a_runtime_error():
    lock = braid.Lock()

    async def use():
        await lock.acquire()

    with pytest.raises(RuntimeError, match="needs a running braid event loop"):
        _run_on_asyncio(use)
    assert not lock.locked()

    async def use_with():
        async with lock:
            pass

    with pytest.raises(RuntimeError, match="needs a running braid event loop"):
        trio.run(use_with)
    assert not lock.locked()


def test_braid_works_again_after_misuse_outside_run():
    with pytest.raises(RuntimeError):
        braid.current_time()

    async def main():
        await braid.sleep(1)
        return braid.current_time()

    assert braid.run(main, clock=braid.VirtualClock(start=1)) == 2.0


# ---- cancel scopes used wrongly -----------------------------------------------------------------


async def test_exiting_an_outer_scope_before_the_inner_one_is_a_runtime_error():
    outer, inner = CancelScope(), CancelScope()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match="isn't the current task's current cancel scope"):
        outer.__exit__(None, None, None)
    # the inner scope was left with it; exiting it later changes nothing
    assert inner.__exit__(None, None, None) is False
    assert inner.cancel_called  # the misnested scope was cancelled, as Trio does
    await braid.checkpoint()  # and the task is in a consistent state again
    with CancelScope() as scope:
        scope.cancel()
        await braid.checkpoint()
    assert scope.cancelled_caught


async def test_exiting_a_scope_in_another_task_is_a_runtime_error():
    scope = CancelScope()
    errors = []

    async def other():
        try:
            scope.__exit__(None, None, None)
        except RuntimeError as e:
            errors.append(e)

    with scope:
        async with braid.create_task_group() as tg:
            tg.start_soon(other)
    assert len(errors) == 1


async def test_exiting_a_scope_never_entered_is_a_runtime_error():
    with pytest.raises(RuntimeError):
        CancelScope().__exit__(None, None, None)


async def test_entering_a_cancel_scope_twice_is_a_runtime_error():
    scope = CancelScope()
    with scope:
        with pytest.raises(RuntimeError, match="single 'with' block"):
            with scope:
                pass
    with pytest.raises(RuntimeError, match="single 'with' block"):
        with scope:
            pass


async def test_reusing_a_move_on_after_scope_is_a_runtime_error():
    timeout = braid.move_on_after(1)
    with timeout:
        pass
    with pytest.raises(RuntimeError, match="single 'with' block"):
        with timeout:
            pass


def test_main_returning_with_a_scope_still_open_is_a_runtime_error():
    async def main():
        CancelScope().__enter__()
        await braid.checkpoint()
        return "leaked"

    with pytest.raises(RuntimeError, match="cancel scope"):
        braid.run(main)


def test_main_returning_with_a_task_group_still_open_cancels_its_children_and_fails():
    log = []

    async def child():
        try:
            await braid.sleep_forever()
        finally:
            log.append("child cleanup")

    async def main():
        tg = braid.create_task_group()
        await tg.__aenter__()
        tg.start_soon(child)
        await braid.sleep(1)
        return "leaked"

    with pytest.raises(RuntimeError):
        braid.run(main, clock=braid.VirtualClock())
    assert log == ["child cleanup"]


# ---- operations awaited twice -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [braid.checkpoint, lambda: braid.sleep(0), lambda: braid.sleep(1), braid.checkpoint_if_cancelled,
     braid.cancel_shielded_checkpoint],
    ids=["checkpoint", "sleep0", "sleep1", "checkpoint_if_cancelled", "cancel_shielded_checkpoint"],
)
async def test_awaiting_the_same_operation_twice_is_a_runtime_error(virtual_clock, make):
    op = make()
    await op
    with pytest.raises(RuntimeError, match="already awaited"):
        await op
    await braid.checkpoint()


async def test_awaiting_a_lock_acquire_twice_is_a_runtime_error():
    lock = braid.Lock()
    op = lock.acquire()
    await op
    try:
        with pytest.raises(RuntimeError, match="already awaited"):
            await op
    finally:
        lock.release()
    assert not lock.locked()


async def test_awaiting_an_operation_that_failed_again_is_a_runtime_error():
    with CancelScope() as scope:
        scope.cancel()
        op = braid.checkpoint()
        with pytest.raises(braid.Cancelled):
            await op
        with pytest.raises(RuntimeError, match="already awaited"):
            await op


async def test_awaiting_an_operation_another_task_is_waiting_on_is_a_runtime_error(virtual_clock):
    op = braid.sleep(5)
    log = []

    async def first():
        await op
        log.append(("first woke", braid.current_time()))

    async def second():
        await braid.checkpoint()  # first is waiting on op now
        with pytest.raises(RuntimeError, match="already awaited by another task"):
            await op
        log.append(("second refused", braid.current_time()))

    async with braid.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
    # the first task's wait was not disturbed
    assert log == [("second refused", 0.0), ("first woke", 5.0)]


async def test_yielding_a_braid_operation_instead_of_awaiting_it_is_a_clear_type_error(virtual_clock):
    import types

    @types.coroutine
    def old_style():
        yield braid.sleep(1)

    with pytest.raises(TypeError, match="yielded instead of awaited"):
        await old_style()
    assert braid.current_time() == 0.0

    @types.coroutine
    def delegating():
        yield from braid.sleep(1)  # this is awaiting: fine

    await delegating()
    assert braid.current_time() == 1.0


# ---- task groups used wrongly -------------------------------------------------------------------


async def test_a_child_ending_with_a_scope_still_open_fails_with_a_clear_error():
    async def leaky():
        CancelScope().__enter__()
        await braid.checkpoint()

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(leaky)
    (exc,) = info.value.exceptions
    assert isinstance(exc, RuntimeError)
    assert "still open" in str(exc) and "misnested" in str(exc)


async def test_exiting_a_task_group_while_an_inner_scope_is_open_is_a_runtime_error():
    tg = braid.create_task_group()
    await tg.__aenter__()
    inner = CancelScope()
    inner.__enter__()
    with pytest.raises(RuntimeError, match="task group"):
        await tg.__aexit__(None, None, None)
    inner.__exit__(None, None, None)
    assert await tg.__aexit__(None, None, None) is False  # now properly nested


async def test_exiting_a_task_group_from_another_task_is_a_runtime_error(virtual_clock):
    tg = braid.create_task_group()
    await tg.__aenter__()
    tg.start_soon(braid.sleep, 1)
    errors = []

    async def other():
        try:
            await tg.__aexit__(None, None, None)
        except RuntimeError as e:
            errors.append(e)

    async with braid.create_task_group() as helper:
        helper.start_soon(other)
    assert len(errors) == 1 and "task group" in str(errors[0])
    await tg.__aexit__(None, None, None)  # the task that entered it still can
    assert braid.current_time() == 1.0
