"""AnyIO code runs on braid with only the import changed.

One program written against AnyIO 4's API runs twice: with ``anyio`` itself
(asyncio backend) and with ``braid`` in its place. Both runs must record the
same events (the program avoids orderings AnyIO leaves unspecified).
"""

import math
import threading

import anyio
import braid


async def program(mod):
    """Exercise most of AnyIO's API through `mod` and return what happened."""
    log = []

    # task groups, start/started, names
    async def child(n, *, task_status=mod.TASK_STATUS_IGNORED):
        task_status.started(n * 10)
        await mod.sleep(0.01 * n)
        log.append(("child done", n))

    async with mod.create_task_group() as tg:
        log.append(("started", await tg.start(child, 1)))
        tg.start_soon(child, 2, name="second")
    log.append("group joined")

    # failures: ExceptionGroup, first failure cancels the siblings
    async def fails():
        await mod.sleep(0.01)
        raise ValueError("boom")

    async def sleeps():
        try:
            await mod.sleep_forever()
        except mod.get_cancelled_exc_class():
            log.append("sibling cancelled")
            raise

    try:
        async with mod.create_task_group() as tg:
            tg.start_soon(fails)
            tg.start_soon(sleeps)
    except ExceptionGroup as eg:
        log.append(("group failed", [repr(e) for e in eg.exceptions]))

    # cancel scopes, deadlines, shields
    with mod.move_on_after(0.01) as scope:
        await mod.sleep(1)
    log.append(("moved on", scope.cancelled_caught, scope.cancel_called))
    try:
        with mod.fail_after(0.01):
            await mod.sleep(1)
    except TimeoutError:
        log.append("timed out")
    with mod.CancelScope() as outer:
        outer.cancel()
        with mod.CancelScope(shield=True):
            await mod.sleep(0.01)
            log.append("shielded sleep finished")
        await mod.lowlevel.checkpoint()
        log.append("not reached")
    log.append(("outer caught", outer.cancelled_caught))
    log.append(("effective deadline", mod.current_effective_deadline()))
    with mod.CancelScope(deadline=mod.current_time() + 5):
        log.append(("deadline set", mod.current_effective_deadline() > mod.current_time()))

    # memory object streams
    send, receive = mod.create_memory_object_stream[int](2)

    async def producer(s):
        async with s:
            for i in range(5):
                await s.send(i)

    async with mod.create_task_group() as tg:
        tg.start_soon(producer, send)
        received = [item async for item in receive]
    log.append(("received", received))
    receive.close()
    try:
        receive.receive_nowait()
    except mod.ClosedResourceError:
        log.append("receive end closed")
    s2, r2 = mod.create_memory_object_stream(1)
    s2.send_nowait("x")
    try:
        s2.send_nowait("y")
    except mod.WouldBlock:
        log.append("would block")
    r2.close()
    try:
        await s2.send("z")
    except mod.BrokenResourceError:
        log.append("broken")
    s3, r3 = mod.create_memory_object_stream(math.inf)
    s3.close()
    try:
        await r3.receive()
    except mod.EndOfStream:
        log.append("end of stream")
    s2.close()
    r3.close()

    # synchronization
    lock = mod.Lock()
    order = []

    async def locker(i):
        async with lock:
            order.append(i)
            await mod.sleep(0.001)

    async with mod.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(locker, i)
            await mod.sleep(0)
    log.append(("lock order", order, lock.statistics().locked))
    sem = mod.Semaphore(2)
    async with sem:
        log.append(("semaphore", sem.value))
    ev = mod.Event()
    async with mod.create_task_group() as tg:
        tg.start_soon(ev.wait)
        await mod.sleep(0)
        log.append(("event waiters", ev.statistics().tasks_waiting))
        ev.set()
    cond = mod.Condition()
    async with cond:
        cond.notify()
    limiter = mod.CapacityLimiter(2)
    async with limiter:
        log.append(("limiter", limiter.borrowed_tokens, limiter.available_tokens))

    # threads
    def in_thread(x):
        token_ok = mod.from_thread.run_sync(lambda: x + 1)
        mod.from_thread.check_cancelled()
        return threading.current_thread() is not threading.main_thread(), token_ok

    log.append(("to_thread", await mod.to_thread.run_sync(in_thread, 41)))

    def calls_async():
        return mod.from_thread.run(mod.sleep, 0)

    log.append(("from_thread.run", await mod.to_thread.run_sync(calls_async)))
    log.append(("task name", (await _named(mod)).endswith("_named")))
    return log


async def _named(mod):
    return mod.get_current_task().name


def test_the_same_program_gives_the_same_events_on_anyio_and_on_braid():
    expected = anyio.run(program, anyio, backend="asyncio")
    actual = braid.run(program, braid)
    assert actual == expected
    assert ("received", [0, 1, 2, 3, 4]) in actual  # the program really ran


def test_anyio_names_for_concurrency_exist_in_braid():
    # the AnyIO names this binding covers (concurrency, not I/O): each exists in
    # both modules, so `import braid as anyio` finds them
    covered = [
        "CancelScope", "CapacityLimiter", "Condition", "Event", "Lock", "Semaphore", "EndOfStream",
        "WouldBlock", "BrokenResourceError", "ClosedResourceError", "BusyResourceError", "TASK_STATUS_IGNORED",
        "create_task_group", "create_memory_object_stream", "current_effective_deadline", "current_time",
        "fail_after", "move_on_after", "get_cancelled_exc_class", "get_current_task", "get_running_tasks",
        "sleep", "sleep_forever", "sleep_until", "run", "TaskInfo", "to_thread", "from_thread", "lowlevel",
        "LockStatistics", "SemaphoreStatistics", "EventStatistics", "ConditionStatistics",
        "CapacityLimiterStatistics", "abc",
    ]
    missing_in_anyio = [n for n in covered if not hasattr(anyio, n)]
    missing_in_braid = [n for n in covered if not hasattr(braid, n)]
    assert missing_in_anyio == []  # the list itself is AnyIO's
    assert missing_in_braid == []
    for sub, names in {"to_thread": ["run_sync", "current_default_thread_limiter"],
                       "from_thread": ["run", "run_sync", "check_cancelled", "start_blocking_portal",
                                       "BlockingPortal"],
                       "lowlevel": ["checkpoint", "checkpoint_if_cancelled", "cancel_shielded_checkpoint",
                                    "current_token"]}.items():
        for n in names:
            assert hasattr(getattr(anyio, sub), n), (sub, n)
            assert hasattr(getattr(braid, sub), n), (sub, n)
