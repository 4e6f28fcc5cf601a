"""braid.run(): results, exceptions, clocks, coop_budget and its argument checks."""

import math
import threading
import time

import pytest

import braid


# ---- results and exceptions ------------------------------------------------------------------


def test_run_returns_the_value_of_the_main_function_called_with_args():
    async def main(a, b, *, _unused=None):
        await braid.checkpoint()
        return a + b

    assert braid.run(main, 2, 3) == 5


def test_run_returns_none_when_main_returns_nothing():
    ran = []

    async def main():
        ran.append(True)
        await braid.sleep(0)

    assert braid.run(main) is None
    assert ran == [True]


def test_run_returns_the_very_object_main_returned():
    sentinel = object()

    async def main():
        await braid.checkpoint()
        return sentinel

    assert braid.run(main) is sentinel


def test_run_propagates_the_exception_of_main_unchanged():
    err = ValueError("boom")

    async def main():
        await braid.checkpoint()
        raise err

    with pytest.raises(ValueError) as info:
        braid.run(main)
    assert info.value is err


def test_run_propagates_an_exception_raised_before_the_first_checkpoint():
    async def main():
        raise LookupError("early")

    with pytest.raises(LookupError, match="early"):
        braid.run(main)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_run_propagates_base_exceptions_of_main(exc_type):
    async def main():
        await braid.checkpoint()
        raise exc_type()

    with pytest.raises(exc_type):
        braid.run(main)


def test_run_of_a_function_that_is_not_async_is_a_type_error():
    with pytest.raises(TypeError):
        braid.run(lambda: 42)


def test_run_can_be_called_again_after_returning_and_after_failing():
    async def boom():
        await braid.checkpoint()
        raise RuntimeError("first")

    async def ok(x):
        await braid.sleep(0)
        return x

    with pytest.raises(RuntimeError, match="first"):
        braid.run(boom)
    assert braid.run(ok, 1) == 1
    assert braid.run(ok, 2, clock=braid.VirtualClock()) == 2


def test_run_waits_for_every_task_before_returning():
    done = []

    async def child(n):
        await braid.sleep(n)
        done.append(n)

    async def main():
        async with braid.create_task_group() as tg:
            for n in (3, 1, 2):
                tg.start_soon(child, n)
        return braid.current_time()

    assert braid.run(main, clock=braid.VirtualClock()) == 3.0
    assert sorted(done) == [1, 2, 3]


# ---- clocks ----------------------------------------------------------------------------------


def test_virtual_clock_starts_at_the_given_time_and_jumps_over_sleeps():
    async def main():
        t0 = braid.current_time()
        await braid.sleep(5)
        t1 = braid.current_time()
        await braid.sleep_until(1000.5)
        return t0, t1, braid.current_time()

    assert braid.run(main, clock=braid.VirtualClock(start=100)) == (100.0, 105.0, 1000.5)


def test_virtual_clock_defaults_to_zero_and_takes_no_real_time():
    async def main():
        t0 = braid.current_time()
        await braid.sleep(3600 * 24)
        return t0, braid.current_time()

    real0 = time.monotonic()
    assert braid.run(main, clock=braid.VirtualClock()) == (0.0, 86400.0)
    assert time.monotonic() - real0 < 5


def test_virtual_clock_start_is_kept_and_shown():
    clock = braid.VirtualClock(start=12)
    assert clock.start == 12.0 and isinstance(clock.start, float)
    assert repr(clock) == "VirtualClock(start=12.0)"
    assert braid.VirtualClock().start == 0.0


@pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf, "1", None])
def test_virtual_clock_rejects_a_start_that_is_not_a_finite_number(start):
    with pytest.raises(ValueError):
        braid.VirtualClock(start=start)


def test_real_clock_is_the_default_and_sleep_takes_real_time():
    async def main():
        t0 = braid.current_time()
        await braid.sleep(0.05)
        return braid.current_time() - t0

    real0 = time.monotonic()
    elapsed = braid.run(main)
    real = time.monotonic() - real0
    assert 0.045 <= elapsed < 5
    assert real >= 0.045


def test_current_time_is_monotonic_on_the_real_clock():
    async def main():
        times = []
        for _ in range(5):
            times.append(braid.current_time())
            await braid.checkpoint()
        return times

    times = braid.run(main)
    assert times == sorted(times)
    assert all(isinstance(t, float) for t in times)


def test_each_thread_may_run_its_own_loop_at_the_same_time():
    results = {}
    barrier = threading.Barrier(2)

    async def main(n):
        barrier.wait(5)  # both loops are running now
        await braid.sleep(0.02)
        return n, braid.get_current_task().id

    def thread_main(n):
        results[n] = braid.run(main, n)

    threads = [threading.Thread(target=thread_main, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert results[1][0] == 1 and results[2][0] == 2
    assert results[1][1] != results[2][1]


# ---- argument checks -------------------------------------------------------------------------


@pytest.mark.parametrize("clock", [1, "virtual", object(), braid.VirtualClock])
def test_run_with_a_clock_that_is_not_a_virtual_clock_is_a_type_error(clock):
    called = []

    async def main():
        called.append(True)

    with pytest.raises(TypeError, match="clock"):
        braid.run(main, clock=clock)
    assert called == []


@pytest.mark.parametrize("budget", [-1, 1_000_001, 1.5, "1", None])
def test_run_rejects_a_coop_budget_out_of_range_or_not_an_int(budget):
    called = []

    async def main():
        called.append(True)

    with pytest.raises(ValueError, match="coop_budget"):
        braid.run(main, coop_budget=budget)
    assert called == []


@pytest.mark.parametrize("budget", [0, 1, 64, 1_000_000])
def test_run_accepts_coop_budgets_from_0_to_1000000(budget):
    async def main():
        lock = braid.Lock()
        for _ in range(3):
            async with lock:
                pass
        return "ok"

    assert braid.run(main, coop_budget=budget) == "ok"


def _acquires_before_other_task_ran(budget, acquires):
    """How many uncontended Lock acquires the main task made before a
    sibling it spawned got to run (None: the sibling did not run)."""

    async def main():
        lock = braid.Lock()
        count = [0]
        seen_at = []

        async def other():
            seen_at.append(count[0])

        async with braid.create_task_group() as tg:
            tg.start_soon(other)
            for _ in range(acquires):
                async with lock:
                    count[0] += 1
            result = seen_at[0] if seen_at else None
        return result

    return braid.run(main, coop_budget=budget)


def test_coop_budget_1_makes_every_uncontended_acquire_a_schedule_point():
    # the first acquire already lets the sibling run (before it completes)
    assert _acquires_before_other_task_ran(1, 5) == 0


def test_a_large_coop_budget_lets_uncontended_acquires_run_without_yielding():
    assert _acquires_before_other_task_ran(1_000_000, 50) is None


def test_the_default_coop_budget_yields_once_every_64_uncontended_acquires():
    seen = _acquires_before_other_task_ran(0, 200)
    assert seen is not None and 1 <= seen <= 64


# ---- nesting -------------------------------------------------------------------------------


async def test_run_inside_a_running_loop_is_a_runtime_error():
    called = []

    async def inner():
        called.append(True)

    with pytest.raises(RuntimeError, match="running braid event loop"):
        braid.run(inner)
    assert called == []
    # the outer loop is unharmed
    await braid.sleep(0)


def test_run_inside_run_in_a_child_task_is_a_runtime_error():
    async def inner():
        return 1

    async def child(errors):
        try:
            braid.run(inner)
        except RuntimeError as e:
            errors.append(e)

    async def main():
        errors = []
        async with braid.create_task_group() as tg:
            tg.start_soon(child, errors)
        return errors

    errors = braid.run(main)
    assert len(errors) == 1 and "braid.run()" in str(errors[0])
