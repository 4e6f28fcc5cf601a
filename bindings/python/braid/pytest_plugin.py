"""pytest plugin: run ``async def`` tests on braid.

Installed with the package (entry point ``pytest11``), or load it explicitly
with ``pytest -p braid.pytest_plugin``. A test runs on braid when it is
marked ``@pytest.mark.braid``, or when it is any ``async def`` test and the
ini option ``braid_mode = auto`` is set. A test that asks for the
``virtual_clock`` fixture runs on braid's virtual clock, so sleeps and
deadlines take no real time::

    import braid, pytest

    @pytest.mark.braid
    async def test_timeout(virtual_clock):
        with braid.move_on_after(10):
            await braid.sleep_forever()
        assert braid.current_time() == virtual_clock.start + 10

Fixtures are synchronous functions (async fixtures are not supported: the
test gets a clear error if one is used).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import braid


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("braid_mode", "'auto': run every async def test on braid; 'strict' (default): only "
                  "tests marked @pytest.mark.braid", default="strict")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "braid: run this async test on the braid event loop")


@pytest.fixture
def virtual_clock() -> braid.VirtualClock:
    """Run the test on braid's virtual clock (starts at 0.0 s; jumps when every task is blocked)."""
    return braid.VirtualClock()


def _wants_braid(item: pytest.Function) -> bool:
    if not inspect.iscoroutinefunction(item.obj):
        return False
    if item.get_closest_marker("braid") is not None:
        return True
    return bool(item.config.getini("braid_mode") == "auto")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not _wants_braid(pyfuncitem):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    for name, value in kwargs.items():
        if inspect.iscoroutine(value) or inspect.isasyncgen(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError(f"fixture {name!r} is async: braid's pytest plugin supports synchronous "
                            "fixtures only")
    clock = kwargs.get("virtual_clock")
    test = pyfuncitem.obj
    braid.run(lambda: test(**kwargs), clock=clock if isinstance(clock, braid.VirtualClock) else None)
    return True
