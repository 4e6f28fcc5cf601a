"""Small awaitables the tests share."""

import braid


async def settle():
    """Virtual clock: let every other task run until it blocks."""
    await braid.sleep(1)


async def wait_until(pred, timeout=10):
    """Real clock: poll pred() while letting the loop (and worker threads) run."""
    with braid.fail_after(timeout):
        while not pred():
            await braid.sleep(0.001)
