"""AnyIO's ``anyio.abc`` names used in type hints of AnyIO code."""

from ._core import TaskGroup, TaskStatus
from ._streams import MemoryObjectReceiveStream as ObjectReceiveStream
from ._streams import MemoryObjectSendStream as ObjectSendStream

__all__ = ["TaskGroup", "TaskStatus", "ObjectSendStream", "ObjectReceiveStream"]
