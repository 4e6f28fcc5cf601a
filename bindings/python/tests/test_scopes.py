"""Cancel scopes, deadlines, shields, timeouts, checkpoints and sleeping (Trio's semantics)."""

import math
import threading
import time

import pytest

import braid
from braid import CancelScope, Cancelled


def test_cancelled_is_a_base_exception_and_the_cancelled_exc_class():
    assert braid.get_cancelled_exc_class() is Cancelled
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


# ---- cancel() -------------------------------------------------------------------------------


async def test_new_scope_is_not_cancelled_has_no_deadline_and_no_shield():
    scope = CancelScope()
    assert scope.deadline == math.inf
    assert scope.shield is False
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False
    assert CancelScope(shield=True).shield is True
    assert CancelScope(deadline=7).deadline == 7.0


async def test_cancel_raises_at_the_next_checkpoint_and_the_scope_catches_it(virtual_clock):
    log = []
    with CancelScope() as scope:
        scope.cancel()
        assert scope.cancel_called
        log.append("not a checkpoint: still running")
        await braid.sleep(10)
        log.append("not reached")
    assert log == ["not a checkpoint: still running"]
    assert scope.cancelled_caught
    assert braid.current_time() == 0.0
    await braid.checkpoint()  # outside the scope nothing is cancelled


async def test_enter_returns_the_scope_itself():
    scope = CancelScope()
    with scope as entered:
        assert entered is scope


async def test_cancel_accepts_a_reason_and_is_idempotent():
    with CancelScope() as scope:
        scope.cancel("first")
        scope.cancel()
        await braid.checkpoint()
    assert scope.cancelled_caught


async def test_cancellation_is_level_triggered_until_the_scope_is_left(virtual_clock):
    attempts = []
    with CancelScope() as scope:
        scope.cancel()
        for name, op in [
            ("checkpoint", braid.checkpoint),
            ("checkpoint_if_cancelled", braid.checkpoint_if_cancelled),
            ("sleep0", lambda: braid.sleep(0)),
            ("sleep", lambda: braid.sleep(5)),
            ("sleep_until", lambda: braid.sleep_until(100)),
            ("sleep_forever", braid.sleep_forever),
            ("checkpoint again", braid.checkpoint),
        ]:
            with pytest.raises(Cancelled):
                await op()
            attempts.append(name)
        try:
            await braid.sleep(1)
        finally:
            # cleanup code inside the cancelled scope is cancelled too
            with pytest.raises(Cancelled):
                await braid.checkpoint()
            attempts.append("cleanup")
    assert len(attempts) == 8
    assert scope.cancelled_caught
    assert braid.current_time() == 0.0


async def test_a_swallowed_cancellation_is_not_caught_by_the_scope():
    with CancelScope() as scope:
        scope.cancel()
        try:
            await braid.checkpoint()
        except Cancelled:
            pass
    assert scope.cancel_called
    assert not scope.cancelled_caught


async def test_scope_cancelled_before_enter_cancels_the_first_checkpoint(virtual_clock):
    scope = CancelScope()
    scope.cancel()
    assert scope.cancel_called and not scope.cancelled_caught
    log = []
    with scope:
        log.append("body starts")
        await braid.sleep(1)
        log.append("not reached")
    assert log == ["body starts"]
    assert scope.cancelled_caught
    assert braid.current_time() == 0.0


async def test_cancel_after_exit_has_no_effect():
    with CancelScope() as scope:
        await braid.checkpoint()
    scope.cancel()
    assert scope.cancel_called and not scope.cancelled_caught
    await braid.checkpoint()


async def test_a_cancelled_scope_exiting_normally_catches_nothing():
    with CancelScope() as scope:
        scope.cancel()
    assert scope.cancel_called and not scope.cancelled_caught


async def test_other_exceptions_pass_through_a_cancelled_scope():
    with pytest.raises(KeyError):
        with CancelScope() as scope:
            scope.cancel()
            raise KeyError("x")
    assert not scope.cancelled_caught


async def test_cancel_from_another_task_wakes_the_sleeper(virtual_clock):
    scope = CancelScope()
    woke = []

    async def sleeper():
        with scope:
            await braid.sleep_forever()
        woke.append(braid.current_time())

    async with braid.create_task_group() as tg:
        tg.start_soon(sleeper)
        await braid.sleep(3)
        assert woke == []
        scope.cancel()
    assert woke == [3.0]
    assert scope.cancelled_caught


async def test_cancel_from_another_thread_wakes_a_sleeping_task():
    with braid.move_on_after(10) as safety:
        with CancelScope() as scope:
            t = threading.Timer(0.05, scope.cancel)
            t.start()
            t0 = time.monotonic()
            await braid.sleep(30)
    t.join()
    assert scope.cancelled_caught
    assert not safety.cancel_called
    assert time.monotonic() - t0 < 5


async def test_cancel_from_another_thread_wakes_a_task_on_the_virtual_clock(virtual_clock):
    # nothing has a deadline: the loop waits for the thread's wake-up
    with CancelScope() as scope:
        t = threading.Timer(0.05, scope.cancel)
        t.start()
        await braid.sleep_forever()
    t.join()
    assert scope.cancelled_caught
    assert braid.current_time() == 0.0


# ---- deadlines --------------------------------------------------------------------------------


async def test_deadline_cancels_at_the_deadline(virtual_clock):
    with CancelScope(deadline=braid.current_time() + 2) as scope:
        assert not scope.cancel_called
        await braid.sleep(5)
    assert scope.cancel_called and scope.cancelled_caught
    assert braid.current_time() == 2.0


async def test_deadline_property_reads_and_writes(virtual_clock):
    scope = CancelScope(deadline=7)
    assert scope.deadline == 7.0
    scope.deadline = 9.5
    assert scope.deadline == 9.5
    scope.deadline = math.inf
    assert scope.deadline == math.inf
    with pytest.raises(TypeError):
        scope.deadline = "soon"
    with pytest.raises(AttributeError):
        del scope.deadline


async def test_deadline_set_before_enter_applies_after_enter(virtual_clock):
    scope = CancelScope()
    scope.deadline = 3
    with scope:
        await braid.sleep(10)
    assert scope.cancelled_caught
    assert braid.current_time() == 3.0


async def test_moving_the_deadline_later_postpones_the_cancellation(virtual_clock):
    with braid.move_on_after(1) as scope:
        scope.deadline += 4
        assert scope.deadline == 5.0
        await braid.sleep(10)
    assert scope.cancelled_caught
    assert braid.current_time() == 5.0


async def test_moving_the_deadline_earlier_cancels_sooner(virtual_clock):
    with braid.move_on_after(10) as scope:
        scope.deadline = 2
        await braid.sleep(10)
    assert scope.cancelled_caught
    assert braid.current_time() == 2.0


async def test_deadline_moved_into_the_past_cancels_at_once(virtual_clock):
    await braid.sleep(5)
    with braid.move_on_after(10) as scope:
        scope.deadline = braid.current_time() - 1
        assert scope.cancel_called
        await braid.sleep(10)
    assert scope.cancelled_caught
    assert braid.current_time() == 5.0


async def test_deadline_in_the_past_at_construction_cancels_the_first_checkpoint(virtual_clock):
    await braid.sleep(5)
    with CancelScope(deadline=1) as scope:
        await braid.checkpoint()
    assert scope.cancelled_caught
    assert braid.current_time() == 5.0


async def test_minus_infinity_deadline_is_kept_and_cancels_at_once(virtual_clock):
    scope = CancelScope(deadline=-math.inf)
    assert scope.deadline == -math.inf
    with scope:
        await braid.checkpoint()
    assert scope.cancelled_caught
    with braid.move_on_after(-math.inf) as scope2:
        assert scope2.deadline == -math.inf
        await braid.checkpoint()
    assert scope2.cancelled_caught


def test_huge_negative_delays_saturate_instead_of_overflowing():
    async def main():
        results = []
        for delay in (-math.inf, -1e300, -9.3e9):
            with braid.move_on_after(delay) as scope:
                await braid.sleep(1)
            results.append((scope.cancelled_caught, scope.deadline, braid.current_time()))
        return results

    # a negative virtual start: now + delay would overflow int64 nanoseconds
    results = braid.run(main, clock=braid.VirtualClock(start=-10))
    assert results == [(True, -math.inf, -10.0)] * 3


async def test_infinite_deadline_removes_the_deadline(virtual_clock):
    with braid.move_on_after(1) as scope:
        scope.deadline = math.inf
        await braid.sleep(5)
    assert not scope.cancel_called and not scope.cancelled_caught
    assert braid.current_time() == 5.0


async def test_deadline_moved_by_another_task_reaches_a_sleeping_task(virtual_clock):
    scope = CancelScope(deadline=10)
    woke = []

    async def sleeper():
        with scope:
            await braid.sleep_forever()
        woke.append(braid.current_time())

    async with braid.create_task_group() as tg:
        tg.start_soon(sleeper)
        await braid.sleep(1)
        scope.deadline = 3
    assert woke == [3.0]


async def test_cancel_is_sticky_after_the_deadline_is_removed(virtual_clock):
    with braid.move_on_after(1) as scope:
        await braid.sleep(2)
    assert scope.cancelled_caught
    with CancelScope() as scope2:
        scope2.cancel()
        scope2.deadline = math.inf
        assert scope2.cancel_called
        await braid.checkpoint()
    assert scope2.cancelled_caught


# ---- shields ------------------------------------------------------------------------------------


async def test_shield_keeps_an_outer_cancellation_out(virtual_clock):
    log = []
    with CancelScope() as outer:
        outer.cancel()
        with CancelScope(shield=True) as inner:
            await braid.sleep(1)
            log.append("shielded sleep done")
        assert not inner.cancelled_caught
        await braid.checkpoint()
        log.append("not reached")
    assert log == ["shielded sleep done"]
    assert outer.cancelled_caught
    assert braid.current_time() == 1.0


async def test_shield_keeps_an_outer_deadline_out(virtual_clock):
    with braid.move_on_after(1) as outer:
        with CancelScope(shield=True):
            await braid.sleep(5)
        assert braid.current_time() == 5.0
        await braid.checkpoint()
    assert outer.cancelled_caught
    assert braid.current_time() == 5.0


async def test_toggling_the_shield_hides_and_reexposes_the_outer_cancellation():
    with CancelScope() as outer:
        with CancelScope(shield=True) as inner:
            outer.cancel()
            await braid.checkpoint()  # shielded
            inner.shield = False
            assert inner.shield is False
            with pytest.raises(Cancelled):
                await braid.checkpoint()
            inner.shield = True
            assert inner.shield is True
            await braid.checkpoint()  # shielded again
            inner.shield = False
            await braid.checkpoint()  # raises, and inner does not catch it
        pytest.fail("the outer cancellation was caught by the inner scope")
    assert outer.cancelled_caught
    assert not inner.cancelled_caught and not inner.cancel_called


async def test_removing_a_shield_from_another_task_wakes_the_sleeper_inside(virtual_clock):
    outer, inner = CancelScope(), CancelScope(shield=True)
    log = []

    async def sleeper():
        with outer:
            with inner:
                try:
                    await braid.sleep(100)
                except Cancelled:
                    log.append(("cancelled", braid.current_time()))
                    raise

    async with braid.create_task_group() as tg:
        tg.start_soon(sleeper)
        await braid.sleep(1)
        outer.cancel()  # hidden by the shield
        await braid.sleep(1)
        assert log == []
        inner.shield = False
    assert log == [("cancelled", 2.0)]
    assert outer.cancelled_caught and not inner.cancelled_caught


async def test_deadline_moved_into_the_past_by_another_task_wakes_the_sleeper(virtual_clock):
    scope = CancelScope()
    woke = []

    async def sleeper():
        with scope:
            await braid.sleep(100)
        woke.append(braid.current_time())

    async with braid.create_task_group() as tg:
        tg.start_soon(sleeper)
        await braid.sleep(1)
        scope.deadline = braid.current_time() - 5
    assert woke == [1.0]
    assert scope.cancelled_caught


async def test_shield_turned_on_inside_protects_from_then_on(virtual_clock):
    with braid.move_on_after(1) as outer:
        with CancelScope() as inner:
            inner.shield = True
            await braid.sleep(3)
    assert not outer.cancelled_caught  # no checkpoint after the deadline outside the shield
    assert outer.cancel_called
    assert braid.current_time() == 3.0


async def test_shield_does_not_block_the_scopes_own_cancel_or_deadline(virtual_clock):
    with CancelScope() as outer:
        outer.cancel()
        with CancelScope(shield=True) as inner:
            inner.cancel()
            await braid.checkpoint()
        assert inner.cancelled_caught  # the outer one is hidden by the shield
        with braid.move_on_after(2, shield=True) as timed:
            await braid.sleep(10)
        assert timed.cancelled_caught
        assert braid.current_time() == 2.0
        await braid.checkpoint()
    assert outer.cancelled_caught


async def test_shield_lets_cleanup_code_wait(virtual_clock):
    log = []
    with braid.move_on_after(1) as scope:
        try:
            await braid.sleep_forever()
        finally:
            with CancelScope(shield=True):
                await braid.sleep(2)
                log.append(braid.current_time())
    assert scope.cancelled_caught
    assert log == [3.0]


async def test_move_on_after_and_fail_after_take_a_shield(virtual_clock):
    with CancelScope() as outer:
        outer.cancel()
        with braid.move_on_after(5, shield=True) as s1:
            assert s1.shield
            await braid.sleep(1)
        with braid.fail_after(5, shield=True) as s2:
            assert s2.shield
            await braid.sleep(1)
        with braid.move_on_at(100, shield=True) as s3:
            await braid.sleep(1)
        with braid.fail_at(100, shield=True) as s4:
            await braid.sleep(1)
        assert s3.shield and s4.shield
    assert braid.current_time() == 4.0
    assert not outer.cancelled_caught  # no checkpoint outside the shields


# ---- nesting ------------------------------------------------------------------------------------


async def test_inner_scope_catches_its_own_cancellation_and_the_outer_goes_on():
    with CancelScope() as outer:
        with CancelScope() as inner:
            inner.cancel()
            await braid.checkpoint()
        await braid.checkpoint()  # not cancelled any more
        after = True
    assert after
    assert inner.cancelled_caught
    assert not outer.cancel_called and not outer.cancelled_caught


async def test_outer_cancellation_passes_through_an_uncancelled_inner_scope():
    with CancelScope() as outer:
        with CancelScope() as inner:
            outer.cancel()
            await braid.checkpoint()
        pytest.fail("not reached")
    assert outer.cancelled_caught
    assert not inner.cancelled_caught and not inner.cancel_called


async def test_when_both_are_cancelled_the_outer_scope_catches():
    with CancelScope() as outer:
        with CancelScope() as inner:
            inner.cancel()
            outer.cancel()
            await braid.checkpoint()
        pytest.fail("not reached")
    assert outer.cancelled_caught
    assert inner.cancel_called and not inner.cancelled_caught


async def test_nested_deadlines_each_scope_catches_its_own(virtual_clock):
    with braid.move_on_after(5) as outer:
        with braid.move_on_after(2) as inner:
            await braid.sleep(10)
        assert braid.current_time() == 2.0
        await braid.sleep(10)
    assert inner.cancelled_caught and outer.cancelled_caught
    assert braid.current_time() == 5.0


async def test_earlier_outer_deadline_is_caught_by_the_outer_scope(virtual_clock):
    with braid.move_on_after(2) as outer:
        with braid.move_on_after(5) as inner:
            await braid.sleep(10)
    assert outer.cancelled_caught
    assert not inner.cancelled_caught and not inner.cancel_called
    assert braid.current_time() == 2.0


async def test_a_scope_catches_the_cancellation_inside_an_exception_group_and_lets_the_rest_through():
    with pytest.raises(ExceptionGroup) as info:
        with CancelScope() as scope:
            scope.cancel()
            try:
                await braid.checkpoint()
            except Cancelled as exc:
                raise BaseExceptionGroup("mixed", [exc, ValueError("v")])
    assert scope.cancelled_caught
    assert [type(e) for e in info.value.exceptions] == [ValueError]

    with CancelScope() as scope:
        scope.cancel()
        try:
            await braid.checkpoint()
        except Cancelled as exc:
            raise BaseExceptionGroup("only cancellations", [exc])
    assert scope.cancelled_caught


async def test_cancellation_is_raised_again_in_an_except_block_of_the_cancelled_scope():
    log = []
    with CancelScope() as scope:
        scope.cancel()
        try:
            await braid.checkpoint()
        except Cancelled:
            log.append("caught once")
            try:
                await braid.checkpoint()
            except Cancelled:
                log.append("caught twice")
                raise
    assert log == ["caught once", "caught twice"]
    assert scope.cancelled_caught


# ---- move_on_after / move_on_at / fail_after / fail_at -----------------------------------------


async def test_move_on_after_moves_on_at_the_deadline(virtual_clock):
    log = []
    with braid.move_on_after(1.5) as scope:
        assert scope.deadline == 1.5
        await braid.sleep(5)
        log.append("not reached")
    assert log == []
    assert scope.cancel_called and scope.cancelled_caught
    assert braid.current_time() == 1.5


async def test_move_on_after_body_finishing_in_time_is_not_cancelled(virtual_clock):
    with braid.move_on_after(5) as scope:
        await braid.sleep(1)
    assert not scope.cancel_called and not scope.cancelled_caught
    assert braid.current_time() == 1.0


async def test_move_on_after_none_has_no_deadline(virtual_clock):
    with braid.move_on_after(None) as scope:
        assert scope.deadline == math.inf
        assert braid.current_effective_deadline() == math.inf
        await braid.sleep(100)
    assert not scope.cancel_called


@pytest.mark.parametrize("delay", [0, -1])
async def test_move_on_after_zero_or_negative_cancels_the_first_checkpoint_at_once(virtual_clock, delay):
    await braid.sleep(2)
    with braid.move_on_after(delay) as scope:
        await braid.sleep(1)
    assert scope.cancelled_caught
    assert braid.current_time() == 2.0


async def test_move_on_after_a_huge_delay_saturates_to_no_deadline(virtual_clock):
    with braid.move_on_after(1e300) as scope:
        assert scope.deadline == math.inf
        await braid.sleep(10)
    assert not scope.cancel_called


async def test_move_on_at_uses_an_absolute_deadline(virtual_clock):
    await braid.sleep(1)
    with braid.move_on_at(4) as scope:
        assert scope.deadline == 4.0
        await braid.sleep(10)
    assert scope.cancelled_caught
    assert braid.current_time() == 4.0


async def test_move_on_at_in_the_past_cancels_at_once(virtual_clock):
    await braid.sleep(3)
    with braid.move_on_at(1) as scope:
        await braid.sleep(1)
    assert scope.cancelled_caught
    assert braid.current_time() == 3.0


async def test_fail_after_raises_timeout_error_when_the_deadline_fires(virtual_clock):
    log = []
    with pytest.raises(TimeoutError):
        with braid.fail_after(2) as scope:
            await braid.sleep(5)
            log.append("not reached")
    assert log == []
    assert scope.cancel_called and scope.cancelled_caught
    assert braid.current_time() == 2.0


async def test_fail_after_body_finishing_in_time_does_not_raise(virtual_clock):
    with braid.fail_after(2) as scope:
        await braid.sleep(1)
    assert not scope.cancel_called
    assert braid.current_time() == 1.0


async def test_fail_after_none_has_no_deadline(virtual_clock):
    with braid.fail_after(None) as scope:
        assert scope.deadline == math.inf
        await braid.sleep(1000)
    assert not scope.cancel_called


async def test_fail_after_cancelled_explicitly_does_not_time_out(virtual_clock):
    with braid.fail_after(10) as scope:
        scope.cancel()
        await braid.checkpoint()
    assert scope.cancelled_caught
    assert braid.current_time() == 0.0


async def test_fail_after_cancelled_explicitly_and_caught_after_the_deadline_times_out(virtual_clock):
    # as AnyIO: a TimeoutError when the scope caught a cancellation and its deadline has passed
    with pytest.raises(TimeoutError):
        with braid.fail_after(1) as scope:
            scope.cancel()
            with CancelScope(shield=True):
                await braid.sleep(2)
            await braid.checkpoint()
    assert scope.cancelled_caught


async def test_fail_after_lets_an_outer_cancellation_through_not_a_timeout(virtual_clock):
    with CancelScope() as outer:
        with braid.fail_after(10) as inner:
            outer.cancel()
            await braid.sleep(1)
        pytest.fail("not reached")
    assert outer.cancelled_caught
    assert not inner.cancelled_caught


async def test_fail_after_inside_an_earlier_outer_deadline_is_not_a_timeout(virtual_clock):
    with braid.move_on_after(1) as outer:
        with braid.fail_after(5):
            await braid.sleep(10)
        pytest.fail("not reached")
    assert outer.cancelled_caught
    assert braid.current_time() == 1.0


async def test_fail_after_whose_cancellation_was_never_delivered_does_not_raise(virtual_clock):
    with braid.fail_after(1) as scope:
        with CancelScope(shield=True):
            await braid.sleep(2)
        result = "finished"
    assert result == "finished"
    assert scope.cancel_called and not scope.cancelled_caught
    assert braid.current_time() == 2.0


async def test_fail_at_raises_timeout_error_at_the_absolute_deadline(virtual_clock):
    await braid.sleep(1)
    with pytest.raises(TimeoutError):
        with braid.fail_at(3):
            await braid.sleep(10)
    assert braid.current_time() == 3.0
    with braid.fail_at(10):
        await braid.sleep(1)
    assert braid.current_time() == 4.0


async def test_fail_after_timeout_can_be_caught_and_the_task_goes_on(virtual_clock):
    try:
        with braid.fail_after(1):
            await braid.sleep_forever()
    except TimeoutError:
        pass
    await braid.sleep(1)
    assert braid.current_time() == 2.0


# ---- current_effective_deadline ------------------------------------------------------------------


async def test_current_effective_deadline_follows_scopes_and_shields(virtual_clock):
    ced = braid.current_effective_deadline
    assert ced() == math.inf
    with braid.move_on_after(5):
        assert ced() == 5.0
        with braid.move_on_after(10):
            assert ced() == 5.0
            with braid.move_on_after(2):
                assert ced() == 2.0
            assert ced() == 5.0
            with CancelScope(shield=True):
                assert ced() == math.inf
                with braid.move_on_after(7):
                    assert ced() == 7.0
            with CancelScope(shield=True, deadline=9):
                assert ced() == 9.0
        assert ced() == 5.0
    assert ced() == math.inf


async def test_current_effective_deadline_is_minus_infinity_when_cancelled(virtual_clock):
    with CancelScope() as scope:
        assert braid.current_effective_deadline() == math.inf
        scope.cancel()
        assert braid.current_effective_deadline() == -math.inf
        with CancelScope(shield=True):
            assert braid.current_effective_deadline() == math.inf
        with braid.move_on_after(3):
            assert braid.current_effective_deadline() == -math.inf


async def test_current_effective_deadline_reaches_a_child_task(virtual_clock):
    seen = []

    async def child():
        seen.append(braid.current_effective_deadline())

    with braid.move_on_after(4):
        async with braid.create_task_group() as tg:
            tg.start_soon(child)
    assert seen == [4.0]


# ---- checkpoints -----------------------------------------------------------------------------------


async def test_checkpoint_yields_to_other_ready_tasks():
    log = []

    async def child(name):
        for i in range(3):
            log.append(f"{name}{i}")
            await braid.checkpoint()

    async with braid.create_task_group() as tg:
        tg.start_soon(child, "a")
        tg.start_soon(child, "b")
    # each checkpoint lets the other task run before the next step
    for name in "ab":
        steps = [i for i, e in enumerate(log) if e.startswith(name)]
        assert len(steps) == 3
    assert log.index("b0") < log.index("a1") and log.index("a1") < log.index("b2")


async def test_checkpoint_raises_when_the_scope_is_cancelled_during_its_yield():
    scope = CancelScope()

    async def canceller():
        scope.cancel()

    async with braid.create_task_group() as tg:
        with scope:
            tg.start_soon(canceller)
            assert not scope.cancel_called
            await braid.checkpoint()
            pytest.fail("not reached")
    assert scope.cancelled_caught


async def test_checkpoint_if_cancelled_does_not_yield():
    log = []

    async def child():
        log.append("child ran")

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        for _ in range(3):
            await braid.checkpoint_if_cancelled()
        assert log == []
        await braid.checkpoint()
        assert log == ["child ran"]


async def test_checkpoint_if_cancelled_raises_inside_a_cancelled_scope():
    with CancelScope() as scope:
        await braid.checkpoint_if_cancelled()
        scope.cancel()
        await braid.checkpoint_if_cancelled()
        pytest.fail("not reached")
    assert scope.cancelled_caught


async def test_cancel_shielded_checkpoint_yields_but_never_raises():
    log = []

    async def child():
        log.append("child ran")

    async with braid.create_task_group() as tg:
        with CancelScope() as scope:
            scope.cancel()
            tg.start_soon(child)
            await braid.cancel_shielded_checkpoint()
            await braid.cancel_shielded_checkpoint()
            assert log == ["child ran"]
    assert not scope.cancelled_caught


async def test_checkpoints_take_no_virtual_time(virtual_clock):
    for _ in range(100):
        await braid.checkpoint()
        await braid.cancel_shielded_checkpoint()
        await braid.checkpoint_if_cancelled()
        await braid.sleep(0)
    assert braid.current_time() == 0.0


# ---- sleeping ----------------------------------------------------------------------------------------


async def test_sleep_advances_the_virtual_clock_exactly(virtual_clock):
    assert await braid.sleep(1) is None
    assert braid.current_time() == 1.0
    await braid.sleep(0.25)
    assert braid.current_time() == 1.25


async def test_virtual_time_is_counted_in_whole_nanoseconds_without_float_drift(virtual_clock):
    for _ in range(10):
        await braid.sleep(0.1)
    assert braid.current_time() == 1.0  # 0.1 added ten times as floats is 0.9999999999999999


async def test_sleep_zero_is_a_checkpoint():
    log = []

    async def child():
        log.append("child ran")

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        await braid.sleep(0)
        assert log == ["child ran"]
    with CancelScope() as scope:
        scope.cancel()
        await braid.sleep(0)
    assert scope.cancelled_caught


async def test_sleep_until_wakes_at_the_absolute_time(virtual_clock):
    await braid.sleep_until(7.5)
    assert braid.current_time() == 7.5


async def test_sleep_until_a_past_time_returns_at_once_but_is_a_checkpoint(virtual_clock):
    await braid.sleep(5)
    await braid.sleep_until(1)
    assert braid.current_time() == 5.0
    with CancelScope() as scope:
        scope.cancel()
        await braid.sleep_until(1)
    assert scope.cancelled_caught


async def test_sleep_forever_sleeps_until_cancelled(virtual_clock):
    with braid.move_on_after(42) as scope:
        await braid.sleep_forever()
    assert scope.cancelled_caught
    assert braid.current_time() == 42.0


async def test_sleep_infinity_sleeps_until_cancelled(virtual_clock):
    with braid.move_on_after(3) as scope:
        await braid.sleep(math.inf)
    assert scope.cancelled_caught
    assert braid.current_time() == 3.0
    with braid.move_on_after(2) as scope:
        await braid.sleep_until(math.inf)
    assert scope.cancelled_caught
    assert braid.current_time() == 5.0


async def test_sleep_of_a_negative_duration_is_a_value_error():
    with pytest.raises(ValueError, match="non-negative"):
        braid.sleep(-1)
    with pytest.raises(ValueError):
        await braid.sleep(-0.001)


@pytest.mark.parametrize(
    "make",
    [
        lambda: braid.sleep(math.nan),
        lambda: braid.sleep_until(math.nan),
        lambda: CancelScope(deadline=math.nan),
        lambda: braid.move_on_after(math.nan),
        lambda: braid.fail_after(math.nan),
        lambda: braid.move_on_at(math.nan),
        lambda: braid.fail_at(math.nan),
    ],
    ids=["sleep", "sleep_until", "CancelScope", "move_on_after", "fail_after", "move_on_at", "fail_at"],
)
async def test_nan_times_are_value_errors(make):
    with pytest.raises(ValueError, match="NaN"):
        make()


async def test_setting_a_nan_deadline_is_a_value_error_and_keeps_the_deadline():
    scope = CancelScope(deadline=5)
    with pytest.raises(ValueError, match="NaN"):
        scope.deadline = math.nan
    assert scope.deadline == 5.0


async def test_sleep_of_something_not_a_number_is_a_type_error():
    with pytest.raises(TypeError):
        braid.sleep("1")
    with pytest.raises(TypeError):
        braid.sleep(None)
