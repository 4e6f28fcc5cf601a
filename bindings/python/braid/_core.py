"""Tasks, task groups, cancel scopes, time and checkpoints."""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

from . import _braid

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Cancelled = _braid.Cancelled
CancelScope = _braid.CancelScope

_ECANCELED = _braid.BRAID_ECANCELED
_EFAILED = _braid.BRAID_EFAILED
_ESTATE = _braid.BRAID_ESTATE


def get_cancelled_exc_class() -> type[BaseException]:
    """The exception raised at a checkpoint inside a cancelled scope (``braid.Cancelled``).

    Catch it only to clean up, then re-raise it::

        try:
            await braid.sleep(10)
        except braid.get_cancelled_exc_class():
            print("cancelled")
            raise
    """
    return Cancelled


class VirtualClock:
    """A virtual clock: time stands still while tasks run and jumps to the next
    deadline as soon as every task is blocked (Trio's ``MockClock(autojump_threshold=0)``).

    Pass it to :func:`run`; timing-dependent code then runs instantly and
    deterministically::

        braid.run(main, clock=braid.VirtualClock())
    """

    def __init__(self, start: float = 0.0) -> None:
        if not isinstance(start, (int, float)) or math.isnan(start) or math.isinf(start):
            raise ValueError(f"start must be a finite number of seconds, not {start!r}")
        self.start = float(start)

    def __repr__(self) -> str:
        return f"VirtualClock(start={self.start})"


def _install_sigint() -> tuple[Any, Any, socket.socket | None, socket.socket | None, list[bool]]:
    """On the main thread, wake the loop when a signal arrives (so that Python's
    handlers run while it waits) and, with Python's default SIGINT handler,
    route Ctrl-C to a cancellation of the run; returns what run() restores."""
    interrupted = [False]
    if threading.current_thread() is not threading.main_thread():
        return None, None, None, None, interrupted
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    try:
        old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    except ValueError:
        r.close()
        w.close()
        return None, None, None, None, interrupted
    old = signal.getsignal(signal.SIGINT)
    if old is not signal.default_int_handler:
        old = None  # the application's own handler: left alone
    return old, old_fd, r, w, interrupted


@overload
def run(func: Callable[..., Coroutine[Any, Any, T]], *args: Any, clock: VirtualClock | None = None,
        coop_budget: int = 0) -> T: ...
@overload
def run(func: Callable[..., Awaitable[T]], *args: Any, clock: VirtualClock | None = None,
        coop_budget: int = 0) -> T: ...


def run(func: Callable[..., Awaitable[T]], *args: Any, clock: VirtualClock | None = None,
        coop_budget: int = 0) -> T:
    """Run ``await func(*args)`` as the main task of a new braid loop on this
    thread and return its result (or raise its exception).

    ``clock=braid.VirtualClock()`` runs on virtual time. ``coop_budget`` sets
    how often a synchronization operation that did not have to wait yields to
    other tasks (0: every 64th; 1: every time, Trio's exact scheduling).

    Ctrl-C (SIGINT, when run on the main thread with Python's default
    handler) cancels everything the run is doing; once the tasks have
    unwound, ``run`` raises ``KeyboardInterrupt``. Likewise an exception
    raised by a signal handler while the loop waits (``sys.exit()`` in a
    SIGTERM handler) cancels the run, which then raises it::

        async def main():
            async with braid.create_task_group() as tg:
                tg.start_soon(braid.sleep, 1)
            return "done"

        print(braid.run(main))
    """
    if clock is not None and not isinstance(clock, VirtualClock):
        raise TypeError(f"clock must be a braid.VirtualClock or None, not {clock!r}")
    if not isinstance(coop_budget, int) or not 0 <= coop_budget <= 1_000_000:
        raise ValueError("coop_budget must be an int from 0 to 1000000")
    if _braid.in_task():
        raise RuntimeError("braid.run() cannot be called from a running braid event loop")
    old, old_fd, r, w, interrupted = _install_sigint()
    root_scope = CancelScope()

    async def root() -> T | None:
        with root_scope:
            return await func(*args)
        return None  # cancelled by Ctrl-C or a signal handler: run() raises

    if old is not None:
        def on_sigint(signum: int, frame: Any) -> None:
            interrupted[0] = True
            root_scope.cancel()

        signal.signal(signal.SIGINT, on_sigint)
    try:
        coro = root()
        result = _braid.run(coro, clock is not None, clock.start if clock else 0.0,
                            getattr(func, "__qualname__", None) or "main",
                            r.fileno() if r is not None else -1, coop_budget,
                            threading.current_thread() is threading.main_thread(), root_scope)
    except BaseException as exc:
        if interrupted[0]:
            raise KeyboardInterrupt from exc
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if r is not None and w is not None:
            signal.set_wakeup_fd(old_fd)
            r.close()
            w.close()
    if interrupted[0]:
        raise KeyboardInterrupt
    return cast(T, result)


# ---- time and checkpoints -------------------------------------------------

current_time: Callable[[], float] = _braid.current_time
current_effective_deadline: Callable[[], float] = _braid.current_effective_deadline
checkpoint = _braid.checkpoint
checkpoint_if_cancelled = _braid.checkpoint_if_cancelled
cancel_shielded_checkpoint = _braid.cancel_shielded_checkpoint
sleep_forever = _braid.sleep_forever
sleep_until = _braid.sleep_until
sleep = _braid.sleep


def move_on_after(delay: float | None, shield: bool = False) -> CancelScope:
    """A cancel scope whose deadline is ``delay`` seconds from now (None: no deadline).

    When the deadline passes, the code inside is cancelled and execution goes
    on after the ``with`` block::

        with braid.move_on_after(1) as scope:
            await braid.sleep(5)
        assert scope.cancelled_caught
    """
    return _braid.move_on_after(delay, shield)


def move_on_at(deadline: float, shield: bool = False) -> CancelScope:
    """A cancel scope with the absolute ``deadline`` (seconds of :func:`current_time`)."""
    return _braid.scope_at(deadline, shield, False)


def fail_after(delay: float | None, shield: bool = False) -> CancelScope:
    """Like :func:`move_on_after`, but raise ``TimeoutError`` when the deadline cancelled the block::

        try:
            with braid.fail_after(1):
                await braid.sleep(5)
        except TimeoutError:
            print("too slow")
    """
    return _braid.fail_after(delay, shield)


def fail_at(deadline: float, shield: bool = False) -> CancelScope:
    """Like :func:`move_on_at`, but raise ``TimeoutError`` when the deadline cancelled the block."""
    return _braid.scope_at(deadline, shield, True)


# ---- tasks -------------------------------------------------------------------

@dataclass(frozen=True)
class TaskInfo:
    """What :func:`get_current_task` and :func:`get_running_tasks` report of a task."""

    id: int
    parent_id: int | None
    name: str | None
    coro: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskInfo) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)


def _info(t: Any) -> TaskInfo:
    return TaskInfo(t.id, t.parent_id, t.name, t.coro)


def get_current_task() -> TaskInfo:
    """The task calling this function."""
    return _info(_braid.current_task())


def get_running_tasks() -> list[TaskInfo]:
    """Every task of this loop that has started and not finished."""
    return [_info(t) for t in _braid.running_tasks()]


class TaskStatus(Generic[T_co]):
    """Given to a task started with :meth:`TaskGroup.start` as ``task_status``;
    the task calls ``task_status.started(value)`` when it is ready."""

    __slots__ = ()

    def started(self, value: Any = None) -> None:
        """Tell the task that called ``TaskGroup.start()`` that this task is ready, handing it ``value``."""
        _braid.task_started(value)


class _IgnoredTaskStatus(TaskStatus[Any]):
    __slots__ = ()

    def started(self, value: Any = None) -> None:
        pass


TASK_STATUS_IGNORED: TaskStatus[Any] = _IgnoredTaskStatus()
"""The default ``task_status`` of a function that may be started with ``start_soon`` or ``start``."""


def _rc_of(exc: BaseException | None) -> int:
    if exc is None:
        return 0
    if isinstance(exc, Cancelled):
        return _ECANCELED
    if isinstance(exc, BaseExceptionGroup) and exc.split(Cancelled)[1] is None:
        return _ECANCELED
    return 1


class TaskGroup:
    """A task group (Trio's nursery): ``async with`` waits for every task
    started in it. The first failure cancels the others; failures are raised
    together as an ``ExceptionGroup``::

        async with braid.create_task_group() as tg:
            tg.start_soon(worker, 1)
            tg.start_soon(worker, 2, name="second")
        # both workers have finished here
    """

    cancel_scope: CancelScope

    def __init__(self) -> None:
        self._h: Any = None
        self._active = False

    async def __aenter__(self) -> TaskGroup:
        if self._h is not None:
            raise RuntimeError("This task group has already been entered")
        self._h, self.cancel_scope = _braid.group_open()  # the handle knows this task: its tasks' parent
        self._active = True
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if not self._active:
            raise RuntimeError("This task group is not active")
        rc = _rc_of(exc)
        if rc == 1:
            _braid.group_fail(self._h, exc)
        code = await _braid.group_close(self._h, rc)
        if code == _ESTATE:  # refused: the group stays open (its children run on)
            raise RuntimeError("Attempted to exit a task group in another task than the one that entered it, "
                               "or while a cancel scope entered inside it is still open")
        self._active = False
        failures = _braid.group_failures(self._h)
        del exc_type, tb
        if code == _EFAILED:
            if _braid.current_effective_deadline() != -math.inf:
                # no outer cancellation: the group's (cancelled) scope catches the
                # Cancelled inside the failures, as AnyIO's does
                failures = [e for e in (f.split(Cancelled)[1] if isinstance(f, BaseExceptionGroup) else f
                                        for f in failures) if e is not None]
            if not failures:
                return exc is not None  # only cancellations of this group: caught
            # the body's exception (a failure, listed in the group, or the
            # Cancelled the failures caused) is not the group's context
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", failures) from None
        if code == _ECANCELED:
            if isinstance(exc, (Cancelled, BaseExceptionGroup)):
                return False
            raise Cancelled()
        return exc is not None  # a cancellation of this group was caught

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> None:
        """Start ``func(*args)`` as a new task in this group (it runs at the next checkpoint)."""
        coro = func(*args)
        if not self._active:
            coro.close() if hasattr(coro, "close") else None
            raise RuntimeError("This task group is not active; no new tasks can be started.")
        _braid.group_spawn(self._h, coro, func if name is None else str(name))

    async def start(self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> Any:
        """Start ``func(*args, task_status=...)`` and wait until it calls
        ``task_status.started(value)``; return ``value``. Until then the task
        runs in the caller's cancel scopes; then it moves into this group::

            port = await tg.start(serve)
        """
        if not self._active:
            raise RuntimeError("This task group is not active; no new tasks can be started.")
        coro = func(*args, task_status=TaskStatus())
        return await _braid.group_start(self._h, coro, func if name is None else str(name))


def create_task_group() -> TaskGroup:
    """A new :class:`TaskGroup`, to be entered with ``async with``."""
    return TaskGroup()
