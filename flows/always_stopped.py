"""A created session is always stopped: when the body ends, raises, times out or is
cancelled, and when waiting for Ready fails (:func:`always_stopped`).

The stop runs to completion despite cancellation (:mod:`arr_prefect.flows.cancel_shield`)
and is bounded in time (:data:`STOP_TIMEOUT_SECONDS`): a stop that cannot be made is
logged, and the session is left to the layers behind this one (the guard, the hooks, the
rolling lease, the reaper).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio

from arr_prefect.errors import ArrError
from arr_prefect.flows.api_calls import ClientCalls
from arr_prefect.flows.cancel_shield import deliver_held_cancel, finish_despite_cancel
from arr_prefect.flows.events import emit_session_event
from arr_prefect.flows.report import SessionReport, final_status
from arr_prefect.tasks.sessions import run_logger
from arr_prefect.units import format_billing, format_duration

__all__ = ["STOP_TIMEOUT_SECONDS", "always_stopped", "stop_in_teardown"]

# How long teardown may take to stop a session before giving up (the lease and the
# reaper still end it).
STOP_TIMEOUT_SECONDS = 120.0


async def stop_in_teardown(
    calls: ClientCalls,
    session_id: str,
    report: SessionReport,
    cancels_seen: list[BaseException] | None = None,
) -> None:
    """Stop the session: to completion despite cancellation, bounded in time.

    Never raises for a stop that failed: it is recorded in ``report.stop_error`` and
    logged (the session stays tagged on the flow run; its lease and the reaper end it).

    Args:
        calls: How to call the API (task runs in a flow run, the client outside).
        session_id: The session to stop.
        report: Gets ``stop_started_at``, ``stopped_at``, ``stopped_by`` or ``stop_error``.
        cancels_seen: Where cancels that arrive meanwhile are recorded (None: dropped).
    """

    async def stop() -> None:
        with anyio.fail_after(STOP_TIMEOUT_SECONDS):
            await calls.stop(session_id)

    report.stop_started_at = calls.arr.clock.time()
    try:
        await finish_despite_cancel(stop(), cancels_seen)
        report.stopped_by = "finally"
    except (ArrError, TimeoutError) as exc:
        report.stop_error = str(exc) or type(exc).__name__
        run_logger().error(
            "Could not stop session %s: %s. It stays tagged on the flow run; its lease"
            " and the orphan reaper will end it",
            session_id,
            report.stop_error,
        )
    finally:
        report.stopped_at = calls.arr.clock.time()


@asynccontextmanager
async def always_stopped(
    calls: ClientCalls,
    session_id: str,
    report: SessionReport,
    flow_run_id: str | None,
    cancels_seen: list[BaseException],
    released: Sequence[Callable[[str], None]] = (),
) -> AsyncIterator[None]:
    """Stop the session however the block ends, then say how it ended.

    On the way out: the stop (shielded, bounded); once it succeeded, each of ``released``
    is told (the layers holding the session let go of it), the final status is read and
    ``arr.session.stopped`` emitted; then one log line sums the session up. A cancel that
    arrived while the stop ran is delivered last, now that the session is down.

    Args:
        calls: How to call the API (task runs in a flow run, the client outside).
        session_id: The created session.
        report: The session's report (timings, ``stopped_by``, ``final_status``...).
        flow_run_id: The flow run the event is related to (None outside one).
        cancels_seen: The cancels held back so far (by the create); more are added while
            the stop runs.
        released: Called with the session ID once it is stopped.

    Yields:
        Nothing: the block runs as it is.

    Raises:
        asyncio.CancelledError: A cancel that arrived while the stop ran.
    """
    try:
        yield
    finally:
        held = len(cancels_seen)
        await stop_in_teardown(calls, session_id, report, cancels_seen)
        if report.stop_error is None:
            for release in released:
                release(session_id)
            await _report_stopped(calls, session_id, report, flow_run_id)
        _log_summary(session_id, report)
        deliver_held_cancel(cancels_seen, held)


async def _report_stopped(
    calls: ClientCalls, session_id: str, report: SessionReport, flow_run_id: str | None
) -> None:
    """The stop succeeded: read how the session ended and emit ``arr.session.stopped``."""
    arr = calls.arr
    report.final_status = await final_status(arr, session_id)
    emit_session_event(
        "arr.session.stopped",
        session_id,
        flow_run_id,
        report.payload(
            report.stopped_at or arr.clock.time(),
            stopped_by="finally",
            reason=report.ended_reason,
            final_status=report.final_status,
            stop_seconds=None if report.stop_seconds is None else round(report.stop_seconds, 1),
        ),
    )


def _log_summary(session_id: str, report: SessionReport) -> None:
    run_logger().info(
        "Session %s stopped by %s in %s: %s after %s; billed %s; %d lease renewal%s",
        session_id,
        report.stopped_by or "nobody (stop failed)",
        format_duration(report.stop_seconds),
        report.final_status or "status unknown",
        format_duration(report.run_seconds),
        format_billing(report.run_seconds),
        report.lease_renewals,
        "" if report.lease_renewals == 1 else "s",
    )
