"""Shared helpers of the braid pytest suite."""

import pytest

import braid


@pytest.fixture
def run_virtual():
    """Run an async function on a fresh loop with the virtual clock."""

    def runner(fn, *args):
        return braid.run(fn, *args, clock=braid.VirtualClock())

    return runner
pytest_plugins = ["pytester"]
