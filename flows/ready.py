"""The body gets a Ready session, or none at all: :func:`ready`.

Waiting ends with the specific error when the session ends in Error, expires, is stopped
or is not Ready within the timeout (the stop then follows, by
:func:`~arr_prefect.flows.always_stopped.always_stopped`). In a flow run the wait is a
``wait-until-ready`` task run with a progress artifact; ``arr.session.ready`` says when
the session became usable.
"""

from __future__ import annotations

from arr_prefect.flows.api_calls import ClientCalls
from arr_prefect.flows.events import emit_session_event
from arr_prefect.flows.report import SessionReport, reported_if_ended_by_service
from arr_prefect.models import Session
from arr_prefect.units import format_duration

__all__ = ["ready"]


async def ready(
    calls: ClientCalls,
    session: Session,
    report: SessionReport,
    flow_run_id: str | None,
    *,
    timeout: float | None,
    poll_interval: float | None,
) -> Session:
    """Wait until the created session is Ready, and say so.

    Args:
        calls: How to call the API (task runs in a flow run, the client outside).
        session: The created session.
        report: Gets ``ready_at`` (``created_at`` is when the wait's times count from).
        flow_run_id: The flow run the events are related to (None outside one).
        timeout: Seconds to wait at most (None: ``ARR_READY_TIMEOUT``).
        poll_interval: Seconds between polls (None: ``ARR_POLL_INTERVAL``).

    Returns:
        The session, Ready (with its hostname and handshake port).

    Raises:
        SessionFailedError: The session ended in Error (``arr.session.failed`` emitted).
        SessionExpiredError: Its lease ran out (``arr.session.expired`` emitted).
        SessionStoppedError: It was stopped elsewhere.
        ReadyTimeoutError: Not Ready within ``timeout``.
    """
    clock = calls.arr.clock
    assert report.created_at is not None
    async with reported_if_ended_by_service(report, session.id, flow_run_id, clock):
        async with calls.ready_wait_progress(session.id, report.created_at, timeout) as progress:
            session = await calls.wait_until_ready(
                session.id,
                timeout=timeout,
                poll_interval=poll_interval,
                created_at=report.created_at,
            )
        report.ready_at = clock.time()
        if progress is not None and progress.artifact_id is not None:
            # None for a wait too short to show.
            await progress.update(
                100,
                f"Session {session.id} is Ready,"
                f" {format_duration(report.time_to_ready)} after the create request",
            )
        emit_session_event(
            "arr.session.ready",
            session.id,
            flow_run_id,
            report.payload(
                report.ready_at,
                time_to_ready_seconds=round(report.time_to_ready or 0.0, 1),
                hostname=session.hostname,
            ),
        )
    return session
