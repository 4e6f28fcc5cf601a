"""Task groups: spawning, joining, failures as ExceptionGroups, cancellation, start()."""

import gc
import math
import traceback
import warnings
import weakref

import pytest

import braid
from braid import CancelScope, Cancelled


# ---- start_soon and joining ---------------------------------------------------------------------


async def test_start_soon_passes_positional_args_and_the_name():
    seen = []

    async def child(a, b, *rest):
        seen.append((a, b, rest, braid.get_current_task().name))

    async with braid.create_task_group() as tg:
        tg.start_soon(child, 1, "two", 3, 4, name="worker-1")
    assert seen == [(1, "two", (3, 4), "worker-1")]


async def test_children_run_only_once_the_parent_reaches_a_checkpoint():
    log = []

    async def child(n):
        log.append(n)

    async with braid.create_task_group() as tg:
        tg.start_soon(child, 1)
        tg.start_soon(child, 2)
        log.append("parent")
        assert log == ["parent"]
        await braid.checkpoint()
        assert sorted(log[1:]) == [1, 2]
    assert len(log) == 3


async def test_children_run_at_the_group_exit_if_the_body_never_checkpoints():
    log = []

    async def child():
        log.append("child")

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        log.append("body")
    assert log == ["body", "child"]


async def test_exit_waits_for_every_child(virtual_clock):
    done = []

    async def child(n):
        await braid.sleep(n)
        done.append((n, braid.current_time()))

    async with braid.create_task_group() as tg:
        for n in (3, 1, 2):
            tg.start_soon(child, n)
    assert sorted(done) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert braid.current_time() == 3.0


async def test_group_without_children_exits_with_a_schedule_point():
    log = []

    async def other():
        log.append("other ran")

    async with braid.create_task_group() as outer:
        outer.start_soon(other)
        async with braid.create_task_group():
            pass
        assert log == ["other ran"]


async def test_group_without_children_in_a_cancelled_scope_does_not_raise():
    with CancelScope() as scope:
        scope.cancel()
        async with braid.create_task_group():
            pass
        reached = True
    assert reached
    assert not scope.cancelled_caught


async def test_a_child_may_start_siblings_while_the_parent_waits_at_exit(virtual_clock):
    log = []

    async def second():
        await braid.sleep(2)
        log.append(("second", braid.current_time()))

    async def first(tg):
        await braid.sleep(1)
        tg.start_soon(second)
        log.append(("first", braid.current_time()))

    async with braid.create_task_group() as tg:
        tg.start_soon(first, tg)
    assert log == [("first", 1.0), ("second", 3.0)]


async def test_many_children(virtual_clock):
    total = []

    async def child(i):
        await braid.sleep(i % 7)
        total.append(i)

    async with braid.create_task_group() as tg:
        for i in range(1000):
            tg.start_soon(child, i)
    assert sorted(total) == list(range(1000))
    assert braid.current_time() == 6.0


async def test_aenter_returns_the_group_and_it_has_a_cancel_scope():
    tg = braid.create_task_group()
    async with tg as entered:
        assert entered is tg
        assert isinstance(tg.cancel_scope, CancelScope)
        assert not tg.cancel_scope.cancel_called


# ---- failures -----------------------------------------------------------------------------------


async def test_a_failing_child_cancels_its_siblings_and_the_body(virtual_clock):
    err = ValueError("child failed")
    log = []

    async def failing():
        await braid.sleep(1)
        raise err

    async def sibling():
        try:
            await braid.sleep(10)
        except Cancelled:
            log.append(("sibling cancelled", braid.current_time()))
            raise

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(failing)
            tg.start_soon(sibling)
            try:
                await braid.sleep(20)
            except Cancelled:
                log.append(("body cancelled", braid.current_time()))
                raise
    assert info.value.exceptions == (err,)
    assert sorted(log) == [("body cancelled", 1.0), ("sibling cancelled", 1.0)]
    assert braid.current_time() == 1.0


async def test_failures_are_raised_as_an_exception_group_in_the_order_they_happened(virtual_clock):
    async def fail_at(t, exc):
        await braid.sleep(t)
        raise exc

    async def fail_now(exc):
        raise exc  # no checkpoint: the cancellation by the first failure cannot stop it

    e1, e2 = KeyError("a"), OSError("b")
    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(fail_now, e2)
            tg.start_soon(fail_now, e1)
    assert set(info.value.exceptions) == {e1, e2}
    assert info.value.message == "unhandled errors in a TaskGroup"

    async def cleanup_fails():
        try:
            await braid.sleep_forever()
        finally:
            raise e2

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(cleanup_fails)
            tg.start_soon(fail_at, 1, e1)
    assert info.value.exceptions == (e1, e2)


async def test_the_bodys_own_exception_is_part_of_the_group(virtual_clock):
    body_err, child_err = KeyError("body"), ValueError("child")

    async def failing():
        raise child_err

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(failing)
            await braid.cancel_shielded_checkpoint()  # the child fails here: the body is cancelled...
            raise body_err  # ... but reaches no checkpoint that would raise it
    assert set(info.value.exceptions) == {body_err, child_err}


async def test_a_body_exception_alone_is_wrapped_and_cancels_the_children(virtual_clock):
    body_err = LookupError("body")
    log = []

    async def child():
        try:
            await braid.sleep_forever()
        finally:
            log.append("child cancelled")

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(child)
            await braid.sleep(1)
            raise body_err
    assert info.value.exceptions == (body_err,)
    assert log == ["child cancelled"]
    assert braid.current_time() == 1.0


async def test_except_star_splits_the_failures():
    async def fail(exc):
        raise exc

    caught = []
    try:
        async with braid.create_task_group() as tg:
            tg.start_soon(fail, ValueError(1))
            tg.start_soon(fail, KeyError(2))
    except* ValueError as eg:
        caught.append(("value", len(eg.exceptions)))
    except* KeyError as eg:
        caught.append(("key", len(eg.exceptions)))
    assert sorted(caught) == [("key", 1), ("value", 1)]


async def test_the_group_waits_for_the_cleanup_of_cancelled_children(virtual_clock):
    log = []

    async def slow_cleanup():
        try:
            await braid.sleep_forever()
        finally:
            with CancelScope(shield=True):
                await braid.sleep(5)
            log.append(braid.current_time())

    async def failing():
        await braid.sleep(1)
        raise RuntimeError("x")

    with pytest.raises(ExceptionGroup):
        async with braid.create_task_group() as tg:
            tg.start_soon(slow_cleanup)
            tg.start_soon(failing)
    assert log == [6.0]
    assert braid.current_time() == 6.0


async def test_cancelled_children_alone_are_not_failures(virtual_clock):
    async def child():
        await braid.sleep_forever()

    async with braid.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(child)
        await braid.sleep(1)
        tg.cancel_scope.cancel()
    assert tg.cancel_scope.cancelled_caught


async def test_the_exception_group_does_not_chain_the_bodys_exception_as_its_context(virtual_clock):
    # AnyIO raises the group "from None": the body's Cancelled (or its own
    # exception, already in the group) must not show up as "During handling..."
    async def failing():
        await braid.sleep(1)
        raise ValueError("child")

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(failing)
            await braid.sleep_forever()
    assert info.value.__suppress_context__
    assert info.value.__cause__ is None
    text = "".join(traceback.format_exception(info.value))
    assert "During handling" not in text and "Cancelled" not in text


async def test_a_childs_exception_keeps_its_traceback():
    async def failing_child():
        raise ValueError("here")

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(failing_child)
    (exc,) = info.value.exceptions
    assert "failing_child" in [f.name for f in traceback.extract_tb(exc.__traceback__)]


async def test_a_group_inside_fail_after_raises_timeout_error(virtual_clock):
    with pytest.raises(TimeoutError):
        with braid.fail_after(1):
            async with braid.create_task_group() as tg:
                tg.start_soon(braid.sleep, 10)
    assert braid.current_time() == 1.0
    with pytest.raises(TimeoutError):
        with braid.fail_after(1):
            async with braid.create_task_group() as tg:
                tg.start_soon(braid.sleep, 10)
                await braid.sleep(5)
    assert braid.current_time() == 2.0


async def test_nothing_of_finished_failed_or_cancelled_children_is_kept_alive(virtual_clock):
    class Obj:
        pass

    async def child(o, *, task_status=braid.TASK_STATUS_IGNORED):
        task_status.started(o)
        await braid.sleep(1)

    async def sleeper(o):
        await braid.sleep_forever()

    async def failing(o):
        raise ValueError(o)

    async def failing_starter(o, *, task_status):
        raise KeyError(o)

    objs = [Obj() for _ in range(5)]
    refs = [weakref.ref(o) for o in objs]
    async with braid.create_task_group() as tg:
        tg.start_soon(child, objs[0])
        assert await tg.start(child, objs[1]) is objs[1]
        tg.start_soon(sleeper, objs[2])
        await braid.sleep(0.5)
        tg.cancel_scope.cancel()
    try:
        async with braid.create_task_group() as tg:
            tg.start_soon(failing, objs[3])
    except ExceptionGroup:
        pass
    async with braid.create_task_group() as tg:
        with pytest.raises(KeyError):
            await tg.start(failing_starter, objs[4])
    del objs, tg
    gc.collect()
    assert [r() for r in refs] == [None] * 5


# ---- nested groups ------------------------------------------------------------------------------


async def test_nested_group_failure_propagates_through_each_level(virtual_clock):
    err = ValueError("deep")
    log = []

    async def failing():
        await braid.sleep(1)
        raise err

    async def outer_sibling():
        try:
            await braid.sleep_forever()
        except Cancelled:
            log.append(("outer sibling cancelled", braid.current_time()))
            raise

    async def middle():
        async with braid.create_task_group() as inner:
            inner.start_soon(failing)

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as outer:
            outer.start_soon(outer_sibling)
            outer.start_soon(middle)
    (inner_group,) = info.value.exceptions
    assert isinstance(inner_group, ExceptionGroup)
    assert inner_group.exceptions == (err,)
    assert log == [("outer sibling cancelled", 1.0)]


async def test_cancelling_the_outer_group_reaches_grandchildren_and_is_caught(virtual_clock):
    log = []

    async def grandchild():
        try:
            await braid.sleep_forever()
        except Cancelled:
            log.append("grandchild")
            raise

    async def child():
        async with braid.create_task_group() as inner:
            inner.start_soon(grandchild)
        log.append("not reached")

    async with braid.create_task_group() as outer:
        outer.start_soon(child)
        await braid.sleep(2)
        outer.cancel_scope.cancel()
    assert log == ["grandchild"]
    assert outer.cancel_scope.cancelled_caught
    assert braid.current_time() == 2.0


# ---- cancellation -------------------------------------------------------------------------------


async def test_cancel_scope_cancel_cancels_children_and_body_and_is_caught(virtual_clock):
    log = []

    async def child():
        try:
            await braid.sleep_forever()
        except Cancelled:
            log.append("child")
            raise

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        await braid.sleep(1)
        tg.cancel_scope.cancel()
        try:
            await braid.checkpoint()
        except Cancelled:
            log.append("body")
            raise
    after = True
    assert after
    assert sorted(log) == ["body", "child"]
    assert tg.cancel_scope.cancel_called and tg.cancel_scope.cancelled_caught


async def test_a_child_may_cancel_its_group(virtual_clock):
    async def canceller(tg):
        await braid.sleep(3)
        tg.cancel_scope.cancel()

    async with braid.create_task_group() as tg:
        tg.start_soon(canceller, tg)
        tg.start_soon(braid.sleep_forever)
        await braid.sleep_forever()
    assert braid.current_time() == 3.0
    assert tg.cancel_scope.cancelled_caught


async def test_group_deadline_cancels_the_group(virtual_clock):
    async with braid.create_task_group() as tg:
        tg.cancel_scope.deadline = 2
        tg.start_soon(braid.sleep, 10)
        tg.start_soon(braid.sleep_forever)
    assert braid.current_time() == 2.0
    assert tg.cancel_scope.cancelled_caught


async def test_the_group_scope_cannot_be_entered_by_hand():
    async with braid.create_task_group() as tg:
        with pytest.raises(RuntimeError):
            with tg.cancel_scope:
                pass


async def test_cancellation_from_outside_propagates_out_of_the_group(virtual_clock):
    log = []

    async def child():
        try:
            await braid.sleep_forever()
        except Cancelled:
            log.append("child")
            raise

    with braid.move_on_after(2) as outer:
        async with braid.create_task_group() as tg:
            tg.start_soon(child)
            await braid.sleep_forever()
        log.append("not reached")
    assert log == ["child"]
    assert outer.cancelled_caught
    assert not tg.cancel_scope.cancelled_caught
    assert braid.current_time() == 2.0


async def test_outside_cancellation_while_waiting_at_exit_propagates(virtual_clock):
    with CancelScope() as outer:
        async with braid.create_task_group() as tg:
            tg.start_soon(braid.sleep_forever)

            async def cancel_outer():
                await braid.sleep(1)
                outer.cancel()

            tg.start_soon(cancel_outer)
        pytest.fail("not reached")
    assert outer.cancelled_caught
    assert braid.current_time() == 1.0


async def test_exit_keeps_waiting_for_children_after_a_cancellation(virtual_clock):
    log = []

    async def child():
        try:
            await braid.sleep_forever()
        finally:
            with CancelScope(shield=True):
                await braid.sleep(5)
            log.append(braid.current_time())

    with braid.move_on_after(1):
        async with braid.create_task_group() as tg:
            tg.start_soon(child)
    assert log == [6.0]
    assert braid.current_time() == 6.0


async def test_shielded_group_scope_protects_children_from_an_outer_cancellation(virtual_clock):
    done = []

    async def child():
        await braid.sleep(3)
        done.append(braid.current_time())

    with braid.move_on_after(1) as outer:
        async with braid.create_task_group() as tg:
            tg.cancel_scope.shield = True
            tg.start_soon(child)
    assert done == [3.0]
    assert not outer.cancelled_caught


async def test_a_child_spawned_into_a_cancelled_group_runs_until_its_first_checkpoint():
    log = []

    async def child():
        log.append("started")
        await braid.checkpoint()
        log.append("not reached")

    async with braid.create_task_group() as tg:
        tg.cancel_scope.cancel()
        tg.start_soon(child)
    assert log == ["started"]


# ---- start() -----------------------------------------------------------------------------------


async def test_start_returns_the_started_value_and_the_child_goes_on(virtual_clock):
    log = []

    async def server(port, *, task_status=braid.TASK_STATUS_IGNORED):
        await braid.sleep(1)
        task_status.started(("listening", port))
        log.append(("started", braid.current_time()))
        await braid.sleep(2)
        log.append(("done", braid.current_time()))

    async with braid.create_task_group() as tg:
        value = await tg.start(server, 8080)
        assert value == ("listening", 8080)
        assert braid.current_time() == 1.0
        log.append(("start returned", braid.current_time()))
    assert log[-1] == ("done", 3.0)
    assert ("started", 1.0) in log and ("start returned", 1.0) in log


async def test_started_without_a_value_gives_none():
    async def child(*, task_status):
        task_status.started()

    async with braid.create_task_group() as tg:
        assert await tg.start(child) is None


async def test_a_function_written_for_start_can_be_given_to_start_soon():
    log = []

    async def child(*, task_status=braid.TASK_STATUS_IGNORED):
        task_status.started("ignored")
        log.append("ran")

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
    assert log == ["ran"]


async def test_start_gives_the_child_its_name():
    names = []

    async def child(*, task_status):
        names.append(braid.get_current_task().name)
        task_status.started()

    async with braid.create_task_group() as tg:
        await tg.start(child, name="starter")
    assert names == ["starter"]


async def test_start_raises_the_exception_of_a_child_failing_before_started(virtual_clock):
    err = OSError("cannot bind")

    async def child(*, task_status):
        await braid.sleep(1)
        raise err

    async with braid.create_task_group() as tg:
        with pytest.raises(OSError) as info:
            await tg.start(child)
        assert info.value is err
        assert braid.current_time() == 1.0
    # the failure went to the caller, not to the group: the group exits cleanly


async def test_start_raises_the_exception_of_a_child_failing_at_once():
    async def child(*, task_status):
        raise KeyError("immediately")

    async with braid.create_task_group() as tg:
        with pytest.raises(KeyError, match="immediately"):
            await tg.start(child)


async def test_a_child_failing_after_started_fails_the_group(virtual_clock):
    err = ValueError("later")

    async def child(*, task_status):
        task_status.started(1)
        await braid.sleep(1)
        raise err

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            assert await tg.start(child) == 1
            await braid.sleep_forever()
    assert info.value.exceptions == (err,)
    assert braid.current_time() == 1.0


async def test_a_child_failing_right_after_started_still_gives_start_its_value():
    log = []

    async def child(*, task_status):
        task_status.started(5)
        raise ValueError("right after")

    with pytest.raises(ExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            log.append(await tg.start(child))
            await braid.checkpoint()
            log.append("not reached")
    assert log == [5]
    assert [str(e) for e in info.value.exceptions] == ["right after"]


async def test_start_of_a_child_returning_without_started_is_a_runtime_error():
    async def child(*, task_status):
        await braid.checkpoint()

    async with braid.create_task_group() as tg:
        with pytest.raises(RuntimeError, match="(?i)child exited without calling task_status.started"):
            await tg.start(child)


async def test_started_twice_is_a_runtime_error_in_the_child():
    errors = []

    async def child(*, task_status):
        task_status.started(1)
        try:
            task_status.started(2)
        except RuntimeError as e:
            errors.append(str(e))

    async with braid.create_task_group() as tg:
        assert await tg.start(child) == 1
    assert len(errors) == 1 and "twice" in errors[0]


async def test_cancelling_the_caller_of_start_cancels_the_child_and_waits_for_it(virtual_clock):
    log = []

    async def child(*, task_status):
        try:
            await braid.sleep(5)
        finally:
            with CancelScope(shield=True):
                await braid.sleep(1)
            log.append(("child cleanup done", braid.current_time()))
        task_status.started()

    async with braid.create_task_group() as tg:
        with braid.move_on_after(2) as scope:
            await tg.start(child)
            log.append("not reached")
        log.append(("caller moved on", braid.current_time()))
    assert scope.cancelled_caught
    assert log == [("child cleanup done", 3.0), ("caller moved on", 3.0)]


async def test_start_child_runs_under_the_callers_scopes_until_started(virtual_clock):
    log = []

    async def child(*, task_status):
        await braid.sleep(2)  # the group is cancelled at 1: this child is not in it yet
        log.append(("started", braid.current_time()))
        task_status.started("value")
        try:
            await braid.sleep(10)
        except Cancelled:
            log.append(("cancelled in the group", braid.current_time()))
            raise

    async def caller(tg):
        log.append(("start returned", await tg.start(child), braid.current_time()))

    async with braid.create_task_group() as outer:
        async with braid.create_task_group() as tg:
            tg.start_soon(braid.sleep_forever)
            outer.start_soon(caller, tg)
            await braid.sleep(1)
            tg.cancel_scope.cancel()
    assert log == [
        ("started", 2.0),
        ("cancelled in the group", 2.0),
        ("start returned", "value", 2.0),
    ] or log == [
        ("started", 2.0),
        ("start returned", "value", 2.0),
        ("cancelled in the group", 2.0),
    ]


async def test_after_started_the_child_no_longer_depends_on_the_callers_scopes(virtual_clock):
    log = []

    async def child(*, task_status):
        log.append(("before", braid.current_effective_deadline()))
        task_status.started()
        log.append(("after", braid.current_effective_deadline()))
        await braid.sleep(2)
        log.append(("done", braid.current_time()))

    async with braid.create_task_group() as tg:
        with braid.move_on_after(10) as caller_scope:
            await tg.start(child)
            caller_scope.cancel()
            await braid.checkpoint()
        assert caller_scope.cancelled_caught
    assert log == [("before", 10.0), ("after", math.inf), ("done", 2.0)]


async def test_a_scope_open_across_started_moves_with_the_child_into_the_group(virtual_clock):
    log = []

    async def child(*, task_status):
        with braid.move_on_after(5) as scope:
            task_status.started()
            try:
                await braid.sleep(10)
            except Cancelled:
                log.append(("cancelled", braid.current_time()))
                raise
        log.append(("not reached", scope.cancelled_caught))

    async with braid.create_task_group() as tg:
        await tg.start(child)
        await braid.sleep(1)
        tg.cancel_scope.cancel()  # reaches the child through its own scope
    assert log == [("cancelled", 1.0)]
    assert tg.cancel_scope.cancelled_caught


async def test_deeply_nested_groups_propagate_a_leaf_failure_level_by_level():
    depth = 30

    async def level(n):
        if n == 0:
            raise ValueError("leaf")
        async with braid.create_task_group() as tg:
            tg.start_soon(level, n - 1)

    with pytest.raises(ExceptionGroup) as info:
        await level(depth)
    exc, levels = info.value, 0
    while isinstance(exc, ExceptionGroup):
        (exc,) = exc.exceptions
        levels += 1
    assert levels == depth and str(exc) == "leaf"


async def test_start_in_a_cancelled_caller_starts_the_child_which_is_cancelled_at_its_first_checkpoint():
    log = []

    async def child(*, task_status):
        log.append("child started running")
        await braid.checkpoint()
        task_status.started()

    async with braid.create_task_group() as tg:
        with CancelScope() as scope:
            scope.cancel()
            await tg.start(child)
            log.append("not reached")
    assert log == ["child started running"]
    assert scope.cancelled_caught


# ---- closed groups and bad arguments -----------------------------------------------------------


async def _sleeper():
    await braid.sleep(0)


async def test_start_soon_on_a_closed_group_is_a_runtime_error_and_closes_the_coroutine():
    async with braid.create_task_group() as tg:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="not active"):
            tg.start_soon(_sleeper)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_start_soon_before_the_group_is_entered_is_a_runtime_error():
    tg = braid.create_task_group()
    with pytest.raises(RuntimeError, match="not active"):
        tg.start_soon(_sleeper)


async def test_start_on_a_closed_group_is_a_runtime_error():
    async def child(*, task_status):
        task_status.started()

    async with braid.create_task_group() as tg:
        pass
    with pytest.raises(RuntimeError, match="not active"):
        await tg.start(child)


async def test_a_group_cannot_be_entered_twice():
    tg = braid.create_task_group()
    async with tg:
        pass
    with pytest.raises(RuntimeError):
        async with tg:
            pass


def _sync_function(*args, **kwargs):
    return 42


async def test_start_soon_with_a_function_that_is_not_async_is_a_type_error():
    async with braid.create_task_group() as tg:
        with pytest.raises(TypeError):
            tg.start_soon(_sync_function)


async def test_start_soon_with_a_coroutine_object_instead_of_a_function_is_a_type_error():
    coro = _sleeper()
    try:
        async with braid.create_task_group() as tg:
            with pytest.raises(TypeError):
                tg.start_soon(coro)
    finally:
        coro.close()


async def test_start_with_a_function_that_is_not_async_is_a_type_error():
    async with braid.create_task_group() as tg:
        with pytest.raises(TypeError):
            await tg.start(_sync_function)


async def test_the_group_still_works_after_a_rejected_start_soon(virtual_clock):
    done = []

    async def child():
        await braid.sleep(1)
        done.append(True)

    async with braid.create_task_group() as tg:
        with pytest.raises(TypeError):
            tg.start_soon(_sync_function)
        tg.start_soon(child)
    assert done == [True]


# ---- BaseExceptions in children ---------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_a_base_exception_in_a_child_cancels_the_rest_and_propagates_from_run(exc_type):
    log = []

    async def child():
        await braid.sleep(1)
        raise exc_type()

    async def sibling():
        try:
            await braid.sleep_forever()
        finally:
            log.append("sibling cleanup")

    async def main():
        try:
            async with braid.create_task_group() as tg:
                tg.start_soon(child)
                tg.start_soon(sibling)
                await braid.sleep_forever()
        finally:
            log.append(("main cleanup", braid.current_time()))

    with pytest.raises(BaseExceptionGroup) as info:
        braid.run(main, clock=braid.VirtualClock())
    assert not isinstance(info.value, ExceptionGroup)  # it holds a BaseException
    (exc,) = info.value.exceptions
    assert type(exc) is exc_type
    assert log == ["sibling cleanup", ("main cleanup", 1.0)]


def test_a_keyboard_interrupt_in_the_body_cancels_the_children_and_propagates():
    log = []

    async def child():
        try:
            await braid.sleep_forever()
        finally:
            log.append("child cleanup")

    async def main():
        async with braid.create_task_group() as tg:
            tg.start_soon(child)
            await braid.sleep(1)
            raise KeyboardInterrupt

    with pytest.raises(BaseExceptionGroup) as info:
        braid.run(main, clock=braid.VirtualClock())
    assert [type(e) for e in info.value.exceptions] == [KeyboardInterrupt]
    assert log == ["child cleanup"]


async def test_a_base_exception_group_can_be_caught_in_the_task():
    async def child():
        raise SystemExit(3)

    with pytest.raises(BaseExceptionGroup) as info:
        async with braid.create_task_group() as tg:
            tg.start_soon(child)
    assert info.value.exceptions[0].code == 3
    await braid.checkpoint()
