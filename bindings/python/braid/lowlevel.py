"""AnyIO's ``anyio.lowlevel`` names: checkpoints and the loop token."""

from ._core import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled
from .from_thread import current_token

__all__ = ["checkpoint", "checkpoint_if_cancelled", "cancel_shielded_checkpoint", "current_token", "sleep_blocking"]


def sleep_blocking(seconds: float) -> None:
    """From a plain thread (a ``to_thread`` worker, say): sleep for ``seconds``
    (``math.inf``: until cancelled) without the GIL. Raises ``Cancelled`` when
    the thread's work is cancelled: its task's cancellation in a worker, or
    an enclosing ``CancelScope`` entered in this thread."""
    from . import _braid

    _braid.thread_wait(_braid.K_SLEEP, seconds)
