"""Memory object streams: the braid channel with AnyIO's stream API."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, cast

from . import _braid

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)

EndOfStream = _braid.EndOfStream


@dataclass(frozen=True)
class MemoryObjectStreamStatistics:
    """Items buffered, the buffer's size, open ends of each kind, and tasks waiting to send or receive."""

    current_buffer_used: int
    max_buffer_size: float
    open_send_streams: int
    open_receive_streams: int
    tasks_waiting_send: int
    tasks_waiting_receive: int


def _stats(d: dict[str, int]) -> MemoryObjectStreamStatistics:
    mx: float = d["max_buffer"]
    if mx >= (1 << 62):
        mx = math.inf
    return MemoryObjectStreamStatistics(d["buffered"], mx, d["open_senders"], d["open_receivers"],
                                        d["waiting_send"], d["waiting_receive"])


class _StreamEnd:
    """What both ends share: ``close()`` (the end's own) as a context manager and ``aclose()``."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close this end (async form of :meth:`close`)."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class MemoryObjectSendStream(_StreamEnd, Generic[T_contra]):
    """The sending end. ``await send(item)`` waits for buffer space (or, with
    no buffer, for a receiver); raises ``BrokenResourceError`` once every
    receiving end is closed and ``ClosedResourceError`` if this end is."""

    __slots__ = ("_h", "__weakref__")

    def __init__(self, handle: Any) -> None:
        self._h = handle

    def send(self, item: T_contra) -> Awaitable[None]:
        """Send ``item``, waiting for buffer space or, without a buffer, for a receiver (a checkpoint)."""
        return _braid.channel_send(self._h, item)

    def send_nowait(self, item: T_contra) -> None:
        """Send without waiting; raise ``WouldBlock`` if there is no room."""
        _braid.channel_send_nowait(self._h, item)

    def send_blocking(self, item: T_contra) -> None:
        """From a plain thread: send, blocking the thread while there is no room."""
        _braid.thread_wait(_braid.K_SEND, self._h, item)

    def clone(self) -> MemoryObjectSendStream[T_contra]:
        """Another send end of the same stream (the stream ends when every send end is closed)."""
        return MemoryObjectSendStream(_braid.braid_sender_clone(self._h))

    def close(self) -> None:
        """Close this end: once every send end is closed, receivers get ``EndOfStream``; idempotent."""
        _braid.braid_sender_close(self._h)

    def statistics(self) -> MemoryObjectStreamStatistics:
        """The stream's statistics (also on a closed end)."""
        return _stats(_braid.braid_sender_statistics(self._h))


class MemoryObjectReceiveStream(_StreamEnd, Generic[T_co]):
    """The receiving end; iterate with ``async for`` until every send end is closed::

        async for item in receive_stream:
            print(item)
    """

    __slots__ = ("_h", "__weakref__")

    def __init__(self, handle: Any) -> None:
        self._h = handle

    def receive(self) -> Awaitable[T_co]:
        """Wait for the next item; raise ``EndOfStream`` once every send end is closed and the buffer is empty."""
        return _braid.channel_receive(self._h)

    def receive_nowait(self) -> T_co:
        """Receive without waiting; raise ``WouldBlock`` if nothing is buffered or waiting to be sent."""
        return cast(T_co, _braid.channel_receive_nowait(self._h))

    def receive_blocking(self) -> T_co:
        """From a plain thread: receive, blocking the thread until an item comes."""
        return cast(T_co, _braid.thread_wait(_braid.K_RECEIVE, self._h))

    def clone(self) -> MemoryObjectReceiveStream[T_co]:
        """Another receive end of the same stream (a stream is broken once every receive end is closed)."""
        return MemoryObjectReceiveStream(_braid.braid_receiver_clone(self._h))

    def close(self) -> None:
        """Close this end: its operations raise ``ClosedResourceError``; idempotent."""
        _braid.braid_receiver_close(self._h)

    def statistics(self) -> MemoryObjectStreamStatistics:
        """The stream's statistics (also on a closed end)."""
        return _stats(_braid.braid_receiver_statistics(self._h))

    def __aiter__(self) -> MemoryObjectReceiveStream[T_co]:
        return self

    async def __anext__(self) -> T_co:
        try:
            return cast(T_co, await _braid.channel_receive(self._h))
        except EndOfStream:
            raise StopAsyncIteration from None


class create_memory_object_stream(
    tuple[MemoryObjectSendStream[T], MemoryObjectReceiveStream[T]]
):
    """Create a stream of Python objects; returns ``(send_stream, receive_stream)``.

    ``max_buffer_size`` items can wait in the buffer (0: each send waits for
    a receiver; ``math.inf``: unbounded). Subscript it for typing::

        send, receive = braid.create_memory_object_stream[int](10)
    """

    def __new__(cls, max_buffer_size: float = 0, item_type: object = None
                ) -> create_memory_object_stream[T]:
        if max_buffer_size != math.inf and not isinstance(max_buffer_size, int):
            raise ValueError("max_buffer_size must be either an integer or math.inf")
        if max_buffer_size < 0:
            raise ValueError("max_buffer_size cannot be negative")
        tx, rx = _braid.channel_new(max_buffer_size)
        return tuple.__new__(cls, (MemoryObjectSendStream(tx), MemoryObjectReceiveStream(rx)))
