"""Memory object streams: the braid channel with AnyIO's API (mirrors tests/c/test_channel.c).

Task-only tests run on the virtual clock (``settle()`` returns once every other task
is blocked); tests with threads run on the real clock and poll with a deadline.
"""

import gc
import math
import threading
import weakref

import pytest

import braid
from braid import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
    MemoryObjectStreamStatistics,
    WouldBlock,
    create_memory_object_stream,
)
from support import settle, wait_until


class Item:
    """Something a weakref can watch."""

    def __init__(self, n=0):
        self.n = n


# ---- creation --------------------------------------------------------------------------------------


def test_create_returns_a_send_and_a_receive_stream():
    pair = create_memory_object_stream(3)
    send, receive = pair
    assert isinstance(pair, tuple) and len(pair) == 2
    assert isinstance(send, MemoryObjectSendStream)
    assert isinstance(receive, MemoryObjectReceiveStream)
    assert send.statistics() == MemoryObjectStreamStatistics(0, 3, 1, 1, 0, 0)
    send.close()
    receive.close()


def test_create_subscripted_with_an_item_type():
    send, receive = create_memory_object_stream[int](5)
    assert isinstance(send, MemoryObjectSendStream)
    assert receive.statistics().max_buffer_size == 5
    send.send_nowait(1)
    assert receive.receive_nowait() == 1
    send.close()
    receive.close()


def test_create_with_the_default_size_is_a_rendezvous():
    send, receive = create_memory_object_stream()
    assert send.statistics().max_buffer_size == 0
    with pytest.raises(WouldBlock):
        send.send_nowait("x")
    send.close()
    receive.close()


@pytest.mark.parametrize("size", [-1, -math.inf, 1.5, "3", None, math.nan])
def test_create_with_an_invalid_size_is_a_value_error(size):
    with pytest.raises(ValueError):
        create_memory_object_stream(size)


def test_unbounded_stream_never_blocks_a_sender():
    send, receive = create_memory_object_stream(math.inf)
    assert send.statistics().max_buffer_size == math.inf
    for i in range(10_000):
        send.send_nowait(i)
    assert receive.statistics().current_buffer_used == 10_000
    assert [receive.receive_nowait() for _ in range(10_000)] == list(range(10_000))
    send.close()
    receive.close()


# ---- buffered and rendezvous ------------------------------------------------------------------------


def test_buffered_stream_holds_n_items_in_fifo_order():
    send, receive = create_memory_object_stream(3)
    for i in range(3):
        send.send_nowait(i)
    with pytest.raises(WouldBlock):
        send.send_nowait(3)
    assert send.statistics().current_buffer_used == 3
    assert [receive.receive_nowait() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(WouldBlock):
        receive.receive_nowait()
    send.close()
    receive.close()


async def test_buffered_sender_waits_for_room(virtual_clock):
    send, receive = create_memory_object_stream(1)
    log = []

    async def sender():
        for i in range(3):
            await send.send(i)
            log.append(("sent", i))

    async with braid.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        assert log == [("sent", 0)]  # the second send waits for room
        assert send.statistics().tasks_waiting_send == 1
        assert await receive.receive() == 0
        await settle()
        assert log == [("sent", 0), ("sent", 1)]
        assert await receive.receive() == 1
        assert await receive.receive() == 2
    assert log == [("sent", 0), ("sent", 1), ("sent", 2)]
    send.close()
    receive.close()


async def test_rendezvous_send_completes_only_when_received(virtual_clock):
    send, receive = create_memory_object_stream(0)
    log = []

    async def sender():
        await send.send("hello")
        log.append("send returned")

    async with braid.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        assert log == []
        st = receive.statistics()
        assert st.tasks_waiting_send == 1
        assert st.current_buffer_used == 0
        assert receive.receive_nowait() == "hello"  # takes the waiting sender's item
    assert log == ["send returned"]
    send.close()
    receive.close()


async def test_rendezvous_nowait_needs_a_waiting_partner(virtual_clock):
    send, receive = create_memory_object_stream(0)
    with pytest.raises(WouldBlock):
        send.send_nowait(1)
    with pytest.raises(WouldBlock):
        receive.receive_nowait()
    got = []

    async def receiver():
        got.append(await receive.receive())

    async with braid.create_task_group() as tg:
        tg.start_soon(receiver)
        await settle()
        assert send.statistics().tasks_waiting_receive == 1
        send.send_nowait(42)  # a receiver waits: the item goes straight to it
    assert got == [42]
    send.close()
    receive.close()


async def test_waiting_receivers_get_items_in_fifo_order(virtual_clock):
    send, receive = create_memory_object_stream(0)
    got = []

    async def receiver(i):
        got.append((i, await receive.receive()))

    async with braid.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(receiver, i)
            await settle()
        assert receive.statistics().tasks_waiting_receive == 3
        for item in "abc":
            await send.send(item)
    assert got == [(0, "a"), (1, "b"), (2, "c")]
    send.close()
    receive.close()


# ---- closing ----------------------------------------------------------------------------------------


async def test_end_of_stream_after_the_buffer_drains_once_every_sender_closed(virtual_clock):
    send, receive = create_memory_object_stream(5)
    clone = send.clone()
    send.send_nowait(1)
    clone.send_nowait(2)
    send.close()
    assert receive.statistics().open_send_streams == 1
    clone.send_nowait(3)  # the clone is still open
    clone.close()
    assert receive.statistics().open_send_streams == 0
    assert await receive.receive() == 1
    assert receive.receive_nowait() == 2
    assert await receive.receive() == 3
    with pytest.raises(EndOfStream):
        await receive.receive()
    with pytest.raises(EndOfStream):
        receive.receive_nowait()
    receive.close()


async def test_closing_the_last_sender_ends_waiting_receivers(virtual_clock):
    send, receive = create_memory_object_stream(0)
    clone = send.clone()
    outcomes = []

    async def receiver():
        try:
            await receive.receive()
        except EndOfStream:
            outcomes.append("eof")

    async with braid.create_task_group() as tg:
        tg.start_soon(receiver)
        tg.start_soon(receiver)
        await settle()
        send.close()
        await settle()
        assert outcomes == []  # the clone is still open
        clone.close()
    assert outcomes == ["eof", "eof"]
    receive.close()


async def test_broken_resource_once_every_receiver_closed(virtual_clock):
    send, receive = create_memory_object_stream(1)
    rclone = receive.clone()
    receive.close()
    send.send_nowait("still one receiver")
    assert rclone.receive_nowait() == "still one receiver"
    rclone.close()
    with pytest.raises(BrokenResourceError):
        send.send_nowait(1)
    with pytest.raises(BrokenResourceError):
        await send.send(1)
    send.close()


async def test_closing_the_last_receiver_breaks_waiting_senders(virtual_clock):
    send, receive = create_memory_object_stream(0)
    outcomes = []

    async def sender(i):
        try:
            await send.send(i)
        except BrokenResourceError:
            outcomes.append(("broken", i))

    async with braid.create_task_group() as tg:
        tg.start_soon(sender, 1)
        tg.start_soon(sender, 2)
        await settle()
        assert send.statistics().tasks_waiting_send == 2
        receive.close()
    assert sorted(outcomes) == [("broken", 1), ("broken", 2)]
    send.close()


async def test_operations_on_a_closed_end_are_closed_resource_errors(virtual_clock):
    send, receive = create_memory_object_stream(2)
    send2 = send.clone()
    receive2 = receive.clone()
    send.close()
    send.close()  # idempotent
    receive.close()
    with pytest.raises(ClosedResourceError):
        send.send_nowait(1)
    with pytest.raises(ClosedResourceError):
        await send.send(1)
    with pytest.raises(ClosedResourceError):
        send.clone()
    with pytest.raises(ClosedResourceError):
        receive.receive_nowait()
    with pytest.raises(ClosedResourceError):
        await receive.receive()
    with pytest.raises(ClosedResourceError):
        receive.clone()
    # the other ends are unaffected
    send2.send_nowait("ok")
    assert receive2.receive_nowait() == "ok"
    send2.close()
    receive2.close()


async def test_context_managers_close_the_ends(virtual_clock):
    send, receive = create_memory_object_stream(1)
    with send as s, receive as r:
        assert s is send and r is receive
        s.send_nowait(1)
        assert r.receive_nowait() == 1
    with pytest.raises(ClosedResourceError):
        send.send_nowait(2)
    with pytest.raises(ClosedResourceError):
        receive.receive_nowait()

    send, receive = create_memory_object_stream(1)
    async with send as s, receive as r:
        assert s is send and r is receive
        await s.send(1)
        assert await r.receive() == 1
    with pytest.raises(ClosedResourceError):
        await send.send(2)
    with pytest.raises(ClosedResourceError):
        await receive.receive()

    send, receive = create_memory_object_stream(1)
    await send.aclose()
    with pytest.raises(EndOfStream):
        receive.receive_nowait()
    await receive.aclose()
    with pytest.raises(ClosedResourceError):
        receive.receive_nowait()


async def test_async_for_iterates_until_every_sender_closed(virtual_clock):
    send, receive = create_memory_object_stream(0)

    async def producer(stream, items):
        async with stream:
            for item in items:
                await stream.send(item)

    got = []
    async with braid.create_task_group() as tg:
        tg.start_soon(producer, send.clone(), [1, 2, 3])
        tg.start_soon(producer, send, [10, 20])
        async for item in receive:
            got.append(item)
    assert sorted(got) == [1, 2, 3, 10, 20]
    assert [x for x in got if x < 10] == [1, 2, 3]  # each sender's items in order
    assert [x for x in got if x >= 10] == [10, 20]
    receive.close()


async def test_clones_are_counted_in_statistics(virtual_clock):
    send, receive = create_memory_object_stream(4)
    s2 = send.clone()
    s3 = s2.clone()
    r2 = receive.clone()
    st = receive.statistics()
    assert (st.open_send_streams, st.open_receive_streams) == (3, 2)
    send.send_nowait(1)
    s3.send_nowait(2)
    assert r2.statistics() == MemoryObjectStreamStatistics(2, 4, 3, 2, 0, 0)
    s2.close()
    receive.close()
    assert s3.statistics() == MemoryObjectStreamStatistics(2, 4, 2, 1, 0, 0)
    assert r2.receive_nowait() == 1
    assert r2.receive_nowait() == 2
    send.close()
    s3.close()
    r2.close()


async def test_statistics_count_waiting_tasks(virtual_clock):
    send, receive = create_memory_object_stream(0)

    async def receiver():
        await receive.receive()

    async with braid.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(receiver)
        await settle()
        assert send.statistics() == MemoryObjectStreamStatistics(0, 0, 1, 1, 0, 3)
        for i in range(3):
            await send.send(i)
    assert send.statistics().tasks_waiting_receive == 0
    send.close()
    receive.close()


# ---- cancellation -----------------------------------------------------------------------------------


async def test_a_cancelled_receiver_leaves_the_queue_and_loses_no_item(virtual_clock):
    send, receive = create_memory_object_stream(1)
    with braid.move_on_after(2) as scope:
        await receive.receive()
    assert scope.cancelled_caught
    assert receive.statistics().tasks_waiting_receive == 0
    send.send_nowait("next")
    assert receive.receive_nowait() == "next"
    send.close()
    receive.close()


async def test_a_cancelled_sender_keeps_its_item(virtual_clock):
    send, receive = create_memory_object_stream(0)
    item = Item()
    ref = weakref.ref(item)
    with braid.move_on_after(2) as scope:
        await send.send(item)
    assert scope.cancelled_caught
    assert send.statistics().tasks_waiting_send == 0
    with pytest.raises(WouldBlock):
        receive.receive_nowait()  # the item did not stay in the stream
    del item
    gc.collect()
    assert ref() is None
    send.close()
    receive.close()


async def test_send_and_receive_in_a_cancelled_scope_move_nothing(virtual_clock):
    send, receive = create_memory_object_stream(5)
    send.send_nowait("kept")
    with braid.CancelScope() as scope:
        scope.cancel()
        try:
            await send.send("not sent")
        except braid.Cancelled:
            pass
        else:
            pytest.fail("send() in a cancelled scope must raise Cancelled")
        try:
            await receive.receive()
        except braid.Cancelled:
            pass
        else:
            pytest.fail("receive() in a cancelled scope must raise Cancelled")
    assert receive.statistics().current_buffer_used == 1
    assert receive.receive_nowait() == "kept"
    send.close()
    receive.close()


# ---- item ownership ---------------------------------------------------------------------------------


def test_buffered_items_are_freed_when_the_last_receiver_closes():
    send, receive = create_memory_object_stream(10)
    clone = receive.clone()
    refs = []
    for i in range(5):
        obj = Item(i)
        refs.append(weakref.ref(obj))
        send.send_nowait(obj)
    del obj
    receive.close()
    assert all(r() is not None for r in refs)  # a receiver is still open
    clone.close()
    assert [r() for r in refs] == [None] * 5
    send.close()


def test_items_left_in_a_dropped_stream_are_freed():
    send, receive = create_memory_object_stream(math.inf)
    refs = []
    for i in range(5):
        obj = Item(i)
        refs.append(weakref.ref(obj))
        send.send_nowait(obj)
    del obj
    del send, receive
    gc.collect()
    assert [r() for r in refs] == [None] * 5


def test_items_received_or_refused_are_not_kept_by_the_stream():
    send, receive = create_memory_object_stream(1)
    a, b = Item(1), Item(2)
    ra, rb = weakref.ref(a), weakref.ref(b)
    send.send_nowait(a)
    with pytest.raises(WouldBlock):
        send.send_nowait(b)  # refused: still only ours
    del b
    assert rb() is None
    del a
    got = receive.receive_nowait()
    assert got.n == 1
    del got
    assert ra() is None
    receive.close()
    c = Item(3)
    rc = weakref.ref(c)
    with pytest.raises(BrokenResourceError):
        send.send_nowait(c)
    del c
    assert rc() is None
    send.close()


async def test_items_of_a_broken_async_send_are_not_leaked(virtual_clock):
    send, receive = create_memory_object_stream(0)
    refs = []

    async def sender():
        obj = Item()
        refs.append(weakref.ref(obj))
        with pytest.raises(BrokenResourceError):
            await send.send(obj)

    async with braid.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        receive.close()
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None
    send.close()


# ---- the thread side --------------------------------------------------------------------------------


async def test_a_worker_sends_blocking_to_a_receiving_task():
    send, receive = create_memory_object_stream(1)

    def producer():
        with send:
            for i in range(20):
                send.send_blocking(i)

    got = []
    async with braid.create_task_group() as tg:
        tg.start_soon(braid.to_thread.run_sync, producer)
        with braid.fail_after(10):
            async for item in receive:
                got.append(item)
    assert got == list(range(20))
    receive.close()


async def test_a_worker_receives_blocking_from_a_sending_task():
    send, receive = create_memory_object_stream(0)

    def consumer():
        items = []
        while True:
            try:
                items.append(receive.receive_blocking())
            except EndOfStream:
                return items

    results = []

    async def run_consumer():
        results.append(await braid.to_thread.run_sync(consumer))

    async with braid.create_task_group() as tg:
        tg.start_soon(run_consumer)
        with braid.fail_after(10):
            for i in range(20):
                await send.send(i)
        send.close()
    assert results == [list(range(20))]
    receive.close()


async def test_thread_side_errors_broken_and_closed():
    send, receive = create_memory_object_stream(0)
    receive.close()
    with pytest.raises(BrokenResourceError):
        await braid.to_thread.run_sync(send.send_blocking, "x")
    send.close()
    with pytest.raises(ClosedResourceError):
        await braid.to_thread.run_sync(send.send_blocking, "x")
    with pytest.raises(ClosedResourceError):
        await braid.to_thread.run_sync(receive.receive_blocking)


async def test_a_worker_blocked_in_receive_is_woken_by_cancellation_of_its_task():
    send, receive = create_memory_object_stream(0)
    seen = []

    def consumer():
        try:
            receive.receive_blocking()
        except braid.Cancelled:
            seen.append("cancelled")
            raise

    async with braid.create_task_group() as tg:
        tg.start_soon(braid.to_thread.run_sync, consumer)
        await wait_until(lambda: receive.statistics().tasks_waiting_receive == 1)
        tg.cancel_scope.cancel()
    assert seen == ["cancelled"]
    assert receive.statistics().tasks_waiting_receive == 0
    with pytest.raises(WouldBlock):
        send.send_nowait("nobody waits")
    send.close()
    receive.close()


async def test_blocking_calls_in_a_task_are_refused():
    send, receive = create_memory_object_stream(1)
    with pytest.raises(RuntimeError, match="plain threads"):
        send.send_blocking(1)
    with pytest.raises(RuntimeError, match="plain threads"):
        receive.receive_blocking()
    assert send.statistics().current_buffer_used == 0
    send.close()
    receive.close()


def test_plain_threads_producer_and_consumer_without_a_loop():
    send, receive = create_memory_object_stream(2)
    got = []

    def producer(stream, start):
        with stream:
            for i in range(start, start + 100):
                stream.send_blocking(i)

    def consumer():
        with receive:
            while True:
                try:
                    got.append(receive.receive_blocking())
                except EndOfStream:
                    return

    threads = [threading.Thread(target=producer, args=(send.clone(), 0)),
               threading.Thread(target=producer, args=(send, 1000)),
               threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert sorted(got) == list(range(100)) + list(range(1000, 1100))
    assert [x for x in got if x < 1000] == list(range(100))


async def test_statistics_still_answer_on_a_closed_end():
    # as AnyIO: a closed end reports the stream's statistics
    send, receive = create_memory_object_stream(3)
    send.send_nowait(1)
    send.close()
    st = send.statistics()
    assert (st.current_buffer_used, st.open_send_streams, st.open_receive_streams) == (1, 0, 1)
    receive.close()
    st = receive.statistics()
    assert (st.current_buffer_used, st.open_send_streams, st.open_receive_streams) == (0, 0, 0)
