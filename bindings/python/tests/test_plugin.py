"""The pytest plugin itself: async tests run on braid, with the virtual clock on request."""

import braid


async def test_async_test_runs_on_braid():
    assert braid.get_current_task().id > 0
    await braid.sleep(0)


async def test_virtual_clock_fixture_makes_sleeps_instant(virtual_clock):
    assert braid.current_time() == 0.0
    await braid.sleep(3600)
    assert braid.current_time() == 3600.0


def test_strict_mode_ignores_unmarked_async_tests(pytester):
    pytester.makepyfile(
        """
        import braid, pytest
        async def test_unmarked():
            pass
        @pytest.mark.braid
        async def test_marked(virtual_clock):
            await braid.sleep(5)
            assert braid.current_time() == 5
        """
    )
    result = pytester.runpytest("-p", "braid.pytest_plugin")
    # the unmarked one is left to pytest, which does not run async tests
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*", "FAILED *::test_unmarked*"])


def test_async_fixture_is_a_clear_error_not_a_hang(pytester):
    pytester.makepyfile(
        """
        import pytest
        @pytest.fixture
        async def thing():
            return 1
        @pytest.mark.braid
        async def test_it(thing):
            pass
        """
    )
    result = pytester.runpytest("-p", "braid.pytest_plugin", "-W", "ignore")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*async fixture*thing*"])
