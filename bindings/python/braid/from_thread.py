"""Call into a braid loop from other threads, and blocking portals."""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from . import _braid

T = TypeVar("T")

__all__ = ["run", "run_sync", "check_cancelled", "BlockingPortal", "start_blocking_portal"]


def run(func: Callable[..., Awaitable[T]], *args: Any, token: Any = None) -> T:
    """From a worker thread (``to_thread.run_sync``) or with a loop ``token``:
    run ``await func(*args)`` as a task on the loop and return its result.
    The task is cancelled when the worker's task is."""
    return cast(T, _braid.from_thread_run(func(*args), token))


def run_sync(func: Callable[..., T], *args: Any, token: Any = None) -> T:
    """From a worker thread or with a ``token``: call ``func(*args)`` on the loop's thread and return its result."""
    return cast(T, _braid.from_thread_run_sync(func, args, token))


def check_cancelled() -> None:
    """In a worker thread: raise ``Cancelled`` if the task waiting for it was cancelled."""
    _braid.check_cancelled()


def current_token() -> Any:
    """A token of the running loop, for ``run``/``run_sync`` from threads the loop did not start."""
    return _braid.current_loop()


def _settle(future: concurrent.futures.Future[Any], method: Callable[[Any], None], value: Any) -> None:
    """Set a portal task's outcome, unless another thread cancelled its future meanwhile."""
    try:
        method(value)
    except concurrent.futures.InvalidStateError:
        future.set_running_or_notify_cancel()


class BlockingPortal:
    """A braid loop running in its own thread, called from synchronous code.

    Use :func:`start_blocking_portal`::

        with braid.start_blocking_portal() as portal:
            result = portal.call(fetch, url)          # an async function
            future = portal.start_task_soon(worker)   # a concurrent.futures.Future
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._token: Any = None
        self._tg: Any = None
        self._stop: Any = None
        self._cancel_remaining = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="braid-portal", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        from . import _core, _sync

        async def main() -> None:
            self._stop = _sync.Event()
            async with _core.create_task_group() as tg:
                self._tg = tg
                self._token = _braid.current_loop()
                self._ready.set()
                await self._stop.wait()
                if self._cancel_remaining:
                    tg.cancel_scope.cancel()

        try:
            _core.run(main)
        except BaseException as exc:  # reported to the caller of __init__ or stop()
            self._error = exc
        finally:
            self._ready.set()

    def _check(self) -> None:
        if self._stopped or self._token is None:
            raise RuntimeError("This portal is not running")

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Call ``func(*args)`` in the portal's loop and wait for the result
        (awaited as a task if it is a coroutine function)."""
        self._check()
        import inspect

        if inspect.iscoroutinefunction(func):
            return _braid.from_thread_run(func(*args), self._token)
        result = _braid.from_thread_run_sync(func, args, self._token)
        if inspect.isawaitable(result):
            async def await_it() -> Any:
                return await result
            return _braid.from_thread_run(await_it(), self._token)
        return result

    def start_task_soon(self, func: Callable[..., Awaitable[T]], *args: Any,
                        name: object = None) -> concurrent.futures.Future[T]:
        """Start ``func(*args)`` as a task in the portal; return a Future for its
        result. Cancelling the future cancels the task."""
        self._check()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def task() -> None:
            from ._core import CancelScope

            with CancelScope() as scope:
                # the future stays pending while the task runs (as in AnyIO), so
                # that future.cancel() succeeds, and cancels the task
                future.add_done_callback(lambda f: scope.cancel() if f.cancelled() else None)
                if future.cancelled():
                    future.set_running_or_notify_cancel()
                    return
                try:
                    value = await func(*args)
                except _braid.Cancelled:
                    if future.cancel():
                        future.set_running_or_notify_cancel()
                    raise
                except BaseException as exc:
                    _settle(future, future.set_exception, exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    _settle(future, future.set_result, value)

        _braid.from_thread_run_sync(functools.partial(self._tg.start_soon, task, name=name), (), self._token)
        return future

    def stop(self, cancel_remaining: bool = False) -> None:
        """Stop the portal: with ``cancel_remaining``, cancel the tasks still
        running; then wait for them and for the loop's thread to end."""
        if self._stopped:
            return
        self._cancel_remaining = cancel_remaining
        try:
            _braid.from_thread_run_sync(self._stop.set, (), self._token)
        except _braid.ClosedResourceError:
            pass
        self._stopped = True
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BlockingPortal:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(cancel_remaining=exc is not None)


@contextmanager
def start_blocking_portal() -> Generator[BlockingPortal, None, None]:
    """Start a :class:`BlockingPortal` and stop it (waiting for its tasks) at the end of the block."""
    portal = BlockingPortal()
    try:
        yield portal
    except BaseException:
        portal.stop(cancel_remaining=True)
        raise
    portal.stop()
