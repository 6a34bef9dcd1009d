"""What happened to a session, told: :class:`SessionReport`, the events a session's end
emits when the service ended it, and the one read of a stopped session's final status.

``rendering_session`` fills a :class:`SessionReport` as it goes (the render-batch summary,
the soak and the benchmarks read it); the payload of every ``arr.session.*`` event about
the session is built from it, so the UI, Automations and the summary agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from arr_prefect.client import ArrClient
from arr_prefect.clock import Clock
from arr_prefect.errors import ArrError, SessionExpiredError, SessionFailedError
from arr_prefect.flows.events import emit_session_event, session_payload
from arr_prefect.units import billed_minutes

__all__ = ["SessionReport", "final_status", "reported_if_ended_by_service"]


@dataclass
class SessionReport:
    """What happened to the session of a :func:`rendering_session`, for summaries."""

    session_id: str | None = None
    size: str | None = None
    api_version: str | None = None
    created_at: float | None = None
    ready_at: float | None = None
    stopped_at: float | None = None
    final_status: str | None = None
    lease_renewals: int = 0
    stopped_by: str | None = None
    stop_error: str | None = None
    slot_limit: str | None = None
    """The Prefect concurrency limit a slot was held of (None: no quota enforced)."""
    slot_wait_seconds: float | None = None
    """Real seconds spent waiting for that slot (0 when one was free at once)."""
    notes: list[str] = field(default_factory=list)
    stop_started_at: float | None = None
    """When teardown began stopping the session (``stopped_at`` is when it was done)."""
    ended_reason: str | None = None
    """Why the session ended, when not by a plain stop (the service's Error message...)."""
    price_per_hour: float | None = None
    currency: str | None = None

    @property
    def time_to_ready(self) -> float | None:
        """Seconds from the create request to Ready."""
        if self.created_at is None or self.ready_at is None:
            return None
        return self.ready_at - self.created_at

    @property
    def run_seconds(self) -> float | None:
        """Seconds from the create request to the stop: what the service billed."""
        if self.created_at is None or self.stopped_at is None:
            return None
        return self.stopped_at - self.created_at

    @property
    def stop_seconds(self) -> float | None:
        """Seconds teardown took to stop the session."""
        if self.stop_started_at is None or self.stopped_at is None:
            return None
        return self.stopped_at - self.stop_started_at

    @property
    def billed_minutes(self) -> int | None:
        """Minutes billed: every minute started from the create request to the stop."""
        return billed_minutes(self.run_seconds)

    def payload(self, now: float, **extra: Any) -> dict[str, Any]:
        """The payload of an event about this session, as of ``now``.

        Args:
            now: The time the event describes (epoch seconds on the session's clock).
            **extra: Fields of the event's own (``stopped_by``, ``reason``...).

        Returns:
            The payload every ``arr.session.*`` event carries, plus ``extra``.
        """
        assert self.session_id is not None
        return session_payload(
            self.session_id,
            size=self.size,
            api_version=self.api_version,
            elapsed_seconds=None if self.created_at is None else now - self.created_at,
            price_per_hour=self.price_per_hour,
            currency=self.currency,
            **extra,
        )


async def final_status(arr: ArrClient, session_id: str) -> str | None:
    """The status a stopped session ended with, as the service reports it.

    Read by teardown and by the flow hooks alike, shielded from cancellation and bounded
    to 30 s: the stop itself has already succeeded, this only tells how it ended.

    Args:
        arr: A client of the session's account.
        session_id: The stopped session.

    Returns:
        The status (``Stopped``, ``Expired``, ``Error``), or None when it cannot be read.
    """
    with (
        contextlib.suppress(ArrError, TimeoutError),
        anyio.CancelScope(shield=True),
        anyio.fail_after(30),
    ):
        return (await arr.get_session(session_id)).status.value
    return None


@contextlib.asynccontextmanager
async def reported_if_ended_by_service(
    report: SessionReport, session_id: str, flow_run_id: str | None, clock: Clock
) -> AsyncIterator[None]:
    """Say so when the service itself ends the session while the block runs.

    A ``SessionFailedError`` (the session went to Error) or ``SessionExpiredError`` (the
    lease ran out) leaving the block is recorded as ``report.ended_reason`` and emitted as
    ``arr.session.failed`` or ``arr.session.expired``, which Automations match on; the
    error then goes on its way.

    Args:
        report: The session's report.
        session_id: The session.
        flow_run_id: The flow run the event is related to (None outside one).
        clock: The session's clock, for the event's elapsed time.

    Yields:
        Nothing: the block runs as it is.

    Raises:
        SessionFailedError: Re-raised after the event.
        SessionExpiredError: Re-raised after the event.
    """
    try:
        yield
    except (SessionFailedError, SessionExpiredError) as exc:
        report.ended_reason = str(exc)
        failed = isinstance(exc, SessionFailedError)
        emit_session_event(
            "arr.session.failed" if failed else "arr.session.expired",
            session_id,
            flow_run_id,
            report.payload(clock.time(), reason=str(exc)),
        )
        raise
