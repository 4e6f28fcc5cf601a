"""braid: structured concurrency on the braid C runtime, with AnyIO's API.

Change ``import anyio`` to ``import braid as anyio`` and AnyIO code runs on
braid: tasks are coroutines stepped by braid's C scheduler, and the
synchronization primitives are braid's C objects, shared with C code and
with plain threads::

    import braid

    async def child(n):
        await braid.sleep(n)
        print("child", n, "done")

    async def main():
        async with braid.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(child, n)
        with braid.move_on_after(1):
            await braid.sleep_forever()

    braid.run(main)
"""

from . import _braid, abc, from_thread, lowlevel, to_thread
from ._core import (
    TASK_STATUS_IGNORED,
    CancelScope,
    Cancelled,
    TaskGroup,
    TaskInfo,
    TaskStatus,
    VirtualClock,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    create_task_group,
    current_effective_deadline,
    current_time,
    fail_after,
    fail_at,
    get_cancelled_exc_class,
    get_current_task,
    get_running_tasks,
    move_on_after,
    move_on_at,
    run,
    sleep,
    sleep_forever,
    sleep_until,
)
from ._streams import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
    MemoryObjectStreamStatistics,
    create_memory_object_stream,
)
from ._sync import (
    CapacityLimiter,
    CapacityLimiterStatistics,
    Condition,
    ConditionStatistics,
    Event,
    EventStatistics,
    Lock,
    LockStatistics,
    Semaphore,
    SemaphoreStatistics,
)
from .from_thread import BlockingPortal, start_blocking_portal

WouldBlock = _braid.WouldBlock
EndOfStream = _braid.EndOfStream
BrokenResourceError = _braid.BrokenResourceError
ClosedResourceError = _braid.ClosedResourceError
BusyResourceError = _braid.BusyResourceError
DeadlockError = _braid.DeadlockError

__version__ = _braid.braid_version_string()

__all__ = [
    "BlockingPortal", "BrokenResourceError", "BusyResourceError", "CancelScope", "Cancelled",
    "CapacityLimiter", "CapacityLimiterStatistics", "ClosedResourceError", "Condition",
    "ConditionStatistics", "DeadlockError", "EndOfStream", "Event", "EventStatistics", "Lock",
    "LockStatistics", "MemoryObjectReceiveStream", "MemoryObjectSendStream",
    "MemoryObjectStreamStatistics", "Semaphore", "SemaphoreStatistics", "TASK_STATUS_IGNORED",
    "TaskGroup", "TaskInfo", "TaskStatus", "VirtualClock", "WouldBlock",
    "cancel_shielded_checkpoint", "checkpoint", "checkpoint_if_cancelled", "create_memory_object_stream",
    "create_task_group", "current_effective_deadline", "current_time", "fail_after", "fail_at",
    "abc", "from_thread", "lowlevel", "get_cancelled_exc_class", "get_current_task", "get_running_tasks", "move_on_after",
    "move_on_at", "run", "sleep", "sleep_forever", "sleep_until", "start_blocking_portal", "to_thread",
]
