"""Lock, Semaphore, Event, Condition and CapacityLimiter: the braid C objects.

Each one is usable from braid tasks (the ``async`` methods) and from plain
threads, such as ``to_thread.run_sync`` workers (the ``*_blocking`` methods
and the ``with`` statement), where waiting blocks the thread without the
GIL and honours the thread's cancellation. The C handle (``.handle``, and
``int(obj.handle)`` for its address) can be given to C code linked to
libbraid.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from . import _braid
from ._core import TaskInfo, get_running_tasks

_done = _braid.done
_OWNER_TASK = _braid.BRAID_OWNER_TASK


def _task_info(task_id: int) -> TaskInfo | None:
    if not _braid.in_task():
        return None
    for info in get_running_tasks():
        if info.id == task_id:
            return info
    return None


@dataclass(frozen=True)
class LockStatistics:
    """``locked``; ``owner`` (the owning task, None if free or held by a thread); ``tasks_waiting``."""

    locked: bool
    owner: TaskInfo | None
    tasks_waiting: int


@dataclass(frozen=True)
class SemaphoreStatistics:
    """``tasks_waiting``: tasks and threads waiting for a unit."""

    tasks_waiting: int


@dataclass(frozen=True)
class EventStatistics:
    """``tasks_waiting``: tasks and threads waiting for the event."""

    tasks_waiting: int


@dataclass(frozen=True)
class ConditionStatistics:
    """``tasks_waiting`` for a notification; ``lock_statistics`` of the underlying lock."""

    tasks_waiting: int
    lock_statistics: LockStatistics


@dataclass(frozen=True)
class CapacityLimiterStatistics:
    """Tokens borrowed and in all, the borrowers (tasks as ``TaskInfo``, others as given), waiters."""

    borrowed_tokens: int
    total_tokens: float
    borrowers: tuple[object, ...]
    tasks_waiting: int


def _lock_stats(d: dict[str, Any]) -> LockStatistics:
    owner = _task_info(d["owner_id"]) if d["owner_kind"] == _OWNER_TASK else None
    return LockStatistics(d["locked"], owner, d["waiting"])


class Lock:
    """A mutual-exclusion lock, FIFO, handed directly to the next waiter::

        lock = braid.Lock()
        async with lock:
            ...            # in a task
        with lock:
            ...            # in a worker thread
    """

    __slots__ = ("_h", "__weakref__")

    def __init__(self, *, fast_acquire: bool = False) -> None:
        self._h = _braid.braid_lock_new()

    @property
    def handle(self) -> Any:
        """The C ``braid_lock *`` (``int(lock.handle)`` is its address)."""
        return self._h

    def acquire(self) -> Awaitable[None]:
        """Acquire the lock, waiting if needed (a checkpoint)."""
        return _braid.lock_acquire(self._h)

    def acquire_nowait(self) -> None:
        """Acquire the lock without waiting; raise ``WouldBlock`` if it is taken."""
        _braid.lock_acquire_nowait(self._h)

    def release(self) -> None:
        """Release the lock (RuntimeError if the caller does not hold it)."""
        _braid.lock_release(self._h)

    def locked(self) -> bool:
        """True if some task or thread holds the lock."""
        return bool(_braid.braid_lock_statistics(self._h)["locked"])

    def statistics(self) -> LockStatistics:
        """Whether it is held, by which task, and how many wait."""
        return _lock_stats(_braid.braid_lock_statistics(self._h))

    def acquire_blocking(self) -> None:
        """From a plain thread: block until acquired (``Cancelled`` if the thread's work is cancelled)."""
        _braid.thread_wait(_braid.K_LOCK, self._h)

    def __aenter__(self) -> Awaitable[None]:
        return _braid.lock_acquire(self._h)

    def __aexit__(self, *exc: object) -> Awaitable[None]:
        _braid.lock_release(self._h)
        return _done(None)

    def __enter__(self) -> None:
        _braid.thread_wait(_braid.K_LOCK, self._h)

    def __exit__(self, *exc: object) -> None:
        _braid.lock_release(self._h)


class Semaphore:
    """A counting semaphore (``max_value`` bounds the value; releasing beyond it is a ValueError)."""

    __slots__ = ("_h", "__weakref__")

    def __init__(self, initial_value: int, *, max_value: int | None = None, fast_acquire: bool = False) -> None:
        if not isinstance(initial_value, int):
            raise TypeError("initial_value must be an integer")
        if initial_value < 0:
            raise ValueError("initial_value must be >= 0")
        if max_value is not None:
            if not isinstance(max_value, int):
                raise TypeError("max_value must be an integer or None")
            if max_value < initial_value:
                raise ValueError("max_value must be equal to or higher than initial_value")
            if max_value == 0:
                raise ValueError("max_value must be positive")
        self._h = _braid.braid_semaphore_new(initial_value, max_value or 0)

    @property
    def handle(self) -> Any:
        return self._h

    @property
    def value(self) -> int:
        return int(_braid.braid_semaphore_value(self._h))

    @property
    def max_value(self) -> int | None:
        return int(_braid.braid_semaphore_statistics(self._h)["max"]) or None

    def acquire(self) -> Awaitable[None]:
        """Decrement the value, waiting while it is 0 (a checkpoint)."""
        return _braid.semaphore_acquire(self._h)

    def acquire_nowait(self) -> None:
        """Decrement the value without waiting; raise ``WouldBlock`` if it is 0."""
        _braid.braid_semaphore_acquire_nowait(self._h)

    def acquire_blocking(self) -> None:
        """From a plain thread: decrement the value, blocking the thread while it is 0."""
        _braid.thread_wait(_braid.K_SEMAPHORE, self._h)

    def release(self) -> None:
        """Increment the value (or hand the unit to the first waiter)."""
        try:
            _braid.braid_semaphore_release(self._h)
        except ValueError:
            raise ValueError("semaphore released too many times") from None

    def statistics(self) -> SemaphoreStatistics:
        """How many wait."""
        return SemaphoreStatistics(_braid.braid_semaphore_statistics(self._h)["waiting"])

    async def __aenter__(self) -> Semaphore:
        await _braid.semaphore_acquire(self._h)
        return self

    def __aexit__(self, *exc: object) -> Awaitable[None]:
        self.release()
        return _done(None)

    def __enter__(self) -> None:
        _braid.thread_wait(_braid.K_SEMAPHORE, self._h)

    def __exit__(self, *exc: object) -> None:
        self.release()


class Event:
    """A one-shot event: ``set()`` wakes every waiter, now and later."""

    __slots__ = ("_h", "__weakref__")

    def __init__(self) -> None:
        self._h = _braid.braid_event_new()

    @property
    def handle(self) -> Any:
        return self._h

    def set(self) -> None:
        """Set the event: wake every waiter, now and later. Thread-safe."""
        _braid.braid_event_set(self._h)

    def is_set(self) -> bool:
        """True once the event is set."""
        return bool(_braid.braid_event_is_set(self._h))

    def wait(self) -> Awaitable[None]:
        """Wait until the event is set (a checkpoint even if it already is)."""
        return _braid.event_wait(self._h)

    def wait_blocking(self) -> None:
        """From a plain thread: block until the event is set."""
        _braid.thread_wait(_braid.K_EVENT, self._h)

    def statistics(self) -> EventStatistics:
        """How many wait for the event."""
        return EventStatistics(_braid.braid_event_statistics(self._h)["waiting"])


class Condition:
    """A condition variable over a :class:`Lock` (a new one if none is given)."""

    __slots__ = ("_h", "_lock", "__weakref__")

    def __init__(self, lock: Lock | None = None) -> None:
        self._lock = lock if lock is not None else Lock()
        self._h = _braid.braid_condition_new(self._lock._h)

    @property
    def handle(self) -> Any:
        return self._h

    def acquire(self) -> Awaitable[None]:
        """Acquire the underlying lock (a checkpoint)."""
        return self._lock.acquire()

    def acquire_nowait(self) -> None:
        """Acquire the underlying lock without waiting; raise ``WouldBlock`` if it is taken."""
        self._lock.acquire_nowait()

    def release(self) -> None:
        """Release the underlying lock."""
        self._lock.release()

    def locked(self) -> bool:
        """True if the underlying lock is held."""
        return self._lock.locked()

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (the caller must hold the lock)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        _braid.condition_notify(self._h, n)

    def notify_all(self) -> None:
        """Wake every waiter (the caller must hold the lock)."""
        _braid.condition_notify(self._h, -1)

    def wait(self) -> Awaitable[None]:
        """Release the lock, wait for a notification, re-acquire the lock."""
        return _braid.condition_wait(self._h)

    def acquire_blocking(self) -> None:
        """From a plain thread: acquire the underlying lock, blocking the thread."""
        self._lock.acquire_blocking()

    def wait_blocking(self) -> None:
        """From a plain thread holding the lock: release it, wait for a notification, re-acquire it."""
        _braid.thread_wait(_braid.K_CONDITION, self._h)

    def statistics(self) -> ConditionStatistics:
        """How many wait for a notification, and the lock's statistics."""
        d = _braid.braid_condition_statistics(self._h)
        return ConditionStatistics(d["waiting"], _lock_stats(d["lock"]))

    def __aenter__(self) -> Awaitable[None]:
        return self._lock.acquire()

    def __aexit__(self, *exc: object) -> Awaitable[None]:
        self._lock.release()
        return _done(None)

    def __enter__(self) -> None:
        self._lock.acquire_blocking()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class CapacityLimiter:
    """Lets at most ``total_tokens`` borrowers in at once (``math.inf``: no limit).

    A borrower is the calling task (or thread) unless given explicitly::

        limiter = braid.CapacityLimiter(10)
        async with limiter:
            ...
    """

    __slots__ = ("_h", "_borrowers", "_next", "__weakref__")

    _UNLIMITED = (1 << 62)

    def __init__(self, total_tokens: float, *, _handle: Any = None) -> None:
        self._borrowers: dict[object, int] = {}  # borrower -> its token
        self._next = 1
        if _handle is not None:
            self._h = _handle
            return
        self._h = _braid.braid_limiter_new(self._check_total(total_tokens))

    @classmethod
    def _check_total(cls, value: float) -> int:
        if value == math.inf:
            return cls._UNLIMITED
        if not isinstance(value, int):
            raise TypeError("total_tokens must be an int or math.inf")
        if value < 0:
            raise ValueError("total_tokens must be >= 0")
        return value

    @property
    def handle(self) -> Any:
        return self._h

    @classmethod
    def _total(cls, d: dict[str, Any]) -> float:
        return math.inf if d["total"] >= cls._UNLIMITED else int(d["total"])

    @property
    def total_tokens(self) -> float:
        return self._total(_braid.braid_limiter_statistics(self._h))

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        _braid.braid_limiter_set_total(self._h, self._check_total(value))

    @property
    def borrowed_tokens(self) -> int:
        return int(_braid.braid_limiter_statistics(self._h)["borrowed"])

    @property
    def available_tokens(self) -> float:
        d = _braid.braid_limiter_statistics(self._h)
        return self._total(d) - int(d["borrowed"])

    def _token(self, borrower: object) -> int:
        token = self._borrowers.get(borrower)
        if token is None:
            token = self._borrowers[borrower] = self._next
            self._next += 1
        return token

    def acquire(self) -> Awaitable[None]:
        """Borrow a token for the current task, waiting if none is free."""
        return _braid.limiter_acquire(self._h, 0)

    def acquire_nowait(self) -> None:
        """Borrow a token for the current task without waiting; raise ``WouldBlock`` if none is free."""
        _braid.limiter_acquire_nowait(self._h, 0)

    def _forget(self, borrower: object, token: int) -> None:
        """After a failed acquisition: drop the borrower's token (and reference) unless it holds one."""
        if (_braid.BRAID_OWNER_FOREIGN, token) not in _braid.limiter_borrowers(self._h):
            self._borrowers.pop(borrower, None)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Borrow a token for ``borrower`` (any hashable object), waiting if none is free."""
        token = self._token(borrower)
        try:
            await _braid.limiter_acquire(self._h, token)
        except BaseException:
            self._forget(borrower, token)
            raise

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Borrow a token for ``borrower`` without waiting; raise ``WouldBlock`` if none is free."""
        token = self._token(borrower)
        try:
            _braid.limiter_acquire_nowait(self._h, token)
        except BaseException:
            self._forget(borrower, token)
            raise

    def acquire_blocking(self) -> None:
        """From a plain thread: borrow a token for this thread, blocking it until one is free."""
        _braid.thread_wait(_braid.K_LIMITER, self._h, 0)

    def release(self) -> None:
        """Give back the current task's (or thread's) token."""
        _braid.limiter_release(self._h, 0)

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token."""
        token = self._borrowers.get(borrower)
        if token is None:
            raise RuntimeError("this borrower isn't holding any of this CapacityLimiter's tokens")
        _braid.limiter_release(self._h, token)
        del self._borrowers[borrower]

    def statistics(self) -> CapacityLimiterStatistics:
        """Borrowed and total tokens, the borrowers, and how many wait."""
        d = _braid.braid_limiter_statistics(self._h)
        by_token = {tok: obj for obj, tok in self._borrowers.items()}
        borrowers: list[object] = []
        for kind, ident in _braid.limiter_borrowers(self._h):
            if kind == _braid.BRAID_OWNER_FOREIGN and ident in by_token:
                borrowers.append(by_token[ident])
            elif kind == _OWNER_TASK:
                borrowers.append(_task_info(ident) or ("task", ident))
            else:
                borrowers.append(("thread" if kind == _braid.BRAID_OWNER_THREAD else "job", ident))
        return CapacityLimiterStatistics(d["borrowed"], self._total(d), tuple(borrowers), d["waiting"])

    def __aenter__(self) -> Awaitable[None]:
        return _braid.limiter_acquire(self._h, 0)

    def __aexit__(self, *exc: object) -> Awaitable[None]:
        _braid.limiter_release(self._h, 0)
        return _done(None)

    def __enter__(self) -> None:
        _braid.thread_wait(_braid.K_LIMITER, self._h, 0)

    def __exit__(self, *exc: object) -> None:
        _braid.limiter_release(self._h, 0)
