"""A body whose session is lost ends with why, not with a bare cancel
(:class:`BodyLoss`, :func:`ends_with_the_loss`).

When the lease keeper finds the session over (expired, stopped elsewhere, Error) or the
watchdog finds the worker gone, the body is cancelled so it stops at once; the cancel is
then turned back into the specific error (``SessionEndedError``, ``WorkerLostError``) so
the caller, the run's state and the summary say what happened. A cancel of the caller's
own (one that did not come from the loss) goes on as a cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arr_prefect.errors import SessionEndedError
from arr_prefect.flows.worker_watchdog import WorkerLostError
from arr_prefect.tasks.sessions import run_logger

__all__ = ["BodyLoss", "ends_with_the_loss"]


class BodyLoss:
    """The loss of a session, told to the task running its body.

    Create it in the task that runs the body (it cancels that task).
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.host = asyncio.current_task()
        self.error: SessionEndedError | WorkerLostError | None = None

    def notice(self, error: SessionEndedError | WorkerLostError) -> None:
        """The session (or the worker) is lost: cancel the body, once.

        Args:
            error: Why; raised in place of the cancel by :func:`ends_with_the_loss`.
        """
        host = self.host
        if host is not None and not host.done() and self.error is None:
            self.error = error
            host.cancel(f"session {self.session_id}: {error}")


@asynccontextmanager
async def ends_with_the_loss(loss: BodyLoss) -> AsyncIterator[None]:
    """Turn the cancel that :meth:`BodyLoss.notice` sent into the error it stands for.

    Args:
        loss: The body's :class:`BodyLoss`.

    Yields:
        Nothing: the body runs as it is.

    Raises:
        SessionEndedError: The session was found over while the body ran.
        WorkerLostError: The worker that started the flow run is gone.
        asyncio.CancelledError: Any other cancel (the caller's own among them).
    """
    try:
        yield
    except asyncio.CancelledError:
        # uncancel() == 0: the loss's cancel was the only one; a cancel of the caller's
        # own on top of it must still arrive as a cancel.
        if loss.error is not None and loss.host is not None and loss.host.uncancel() == 0:
            if isinstance(loss.error, WorkerLostError):
                run_logger().error("%s", loss.error)
            raise loss.error from None
        raise
