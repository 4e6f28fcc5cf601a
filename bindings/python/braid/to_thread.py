"""Run blocking functions in worker threads: ``await braid.to_thread.run_sync(fn, *args)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import _braid
from ._sync import CapacityLimiter

T = TypeVar("T")

__all__ = ["run_sync", "current_default_thread_limiter"]


def run_sync(func: Callable[..., T], *args: Any, abandon_on_cancel: bool = False,
             cancellable: bool | None = None, limiter: CapacityLimiter | None = None) -> Any:
    """Run ``func(*args)`` in a worker thread and return its result (an awaitable).

    The call is a checkpoint. While ``func`` runs, the worker thread carries
    the task's cancellation: braid waits in it (``Lock.acquire_blocking``,
    ``from_thread.check_cancelled()``...) raise ``Cancelled`` once the task
    is cancelled. Without ``abandon_on_cancel`` the task waits for ``func``
    to return anyway; with it, the task is cancelled at once and ``func``'s
    result is dropped (its limiter token is still held until it returns).
    At most ``limiter.total_tokens`` calls run at once (default: the loop's
    limiter of 40)::

        data = await braid.to_thread.run_sync(path.read_bytes)
    """
    if cancellable is not None:
        abandon_on_cancel = cancellable
    return _braid.to_thread(func, args, abandon_on_cancel, None if limiter is None else limiter._h)


def current_default_thread_limiter() -> CapacityLimiter:
    """The loop's default limiter of ``run_sync`` (40 tokens; settable)."""
    return CapacityLimiter(0, _handle=_braid.default_limiter())
