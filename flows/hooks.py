"""A cancelled or crashed flow run's sessions are stopped, from whichever process Prefect
runs the hook in: :func:`stop_owned_sessions`.

Prefect runs ``on_cancellation`` in the runner after killing the flow-run process, and
``on_crashed`` in a new process after a SIGKILL: neither can rely on what the flow-run
process knew. The sessions are found from the run's ``arr-session:`` tags
(:mod:`arr_prefect.flows.owner_tags`), the account from its ``arr-credentials:`` tags.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from prefect.client.schemas.objects import Flow, FlowRun, State
from prefect.logging import get_logger

from arr_prefect.client import ArrClient
from arr_prefect.credentials import RemoteRenderingCredentials, load_credentials, open_client_for
from arr_prefect.errors import ArrError, ConfigurationError, SessionNotFoundError
from arr_prefect.flows.events import emit_session_event, run_of, session_payload
from arr_prefect.flows.owner_tags import (
    credentials_blocks_of,
    credentials_made_with,
    owned_session_ids,
)
from arr_prefect.flows.report import final_status
from arr_prefect.models import Session
from arr_prefect.units import format_billing, format_duration

__all__ = ["stop_owned_sessions"]

_Logger = logging.Logger | logging.LoggerAdapter[Any]
# An account to look for the run's sessions in: what to call it in the log, its
# credentials (None: the ARR_* settings), the only sessions it may hold (None: any).
_Account = tuple[str, RemoteRenderingCredentials | None, set[str] | None]


async def stop_owned_sessions(flow: Flow | Any, flow_run: FlowRun, state: State[Any]) -> None:
    """Flow hook (``on_cancellation``, ``on_crashed``): stop every session the run owns.

    Works in the flow-run process and outside it (Prefect runs ``on_cancellation`` in the
    runner after killing the flow-run process): the sessions are found from the run's
    ``arr-session:`` tags. Stopping is idempotent, so running after ``finally`` is harmless.
    The account: the credentials the session was made with when this process made it,
    else each saved block the run recorded (``arr-credentials:`` tags, or render-batch's
    ``credentials_block`` parameter), else the ``ARR_*`` settings of this process; a
    session not found in one account is looked for in the next.

    Args:
        flow: The flow (unused; Prefect passes it to every hook).
        flow_run: The run that was cancelled or crashed.
        state: Its final state (names the hook in the log and the event).

    It raises nothing: a session that cannot be stopped is logged, and left to its lease
    and the reaper.
    """
    logger = get_logger("arr.teardown")
    ids = await owned_session_ids(flow_run.id)
    if not ids:
        return
    pending = set(ids)
    accounts = await _accounts(flow_run, ids, logger)
    for label, credentials, only in accounts:
        targets = sorted(pending if only is None else pending & only)
        if not targets:
            continue
        try:
            async with open_client_for(credentials) as arr:
                for session_id in targets:
                    if await _stop_one(arr, flow_run, state, session_id, label, logger):
                        pending.discard(session_id)
        except ConfigurationError as exc:
            log = logger.debug if len(accounts) > 1 else logger.error
            log("Flow run %s: no client from %s (%s)", flow_run.name, label, exc)


async def _accounts(flow_run: FlowRun, ids: set[str], logger: _Logger) -> list[_Account]:
    """Where to look for the run's sessions, in order: the credentials this process made
    them with, the run's saved blocks, the ``ARR_*`` settings."""
    local: dict[int, tuple[RemoteRenderingCredentials, set[str]]] = {}
    for session_id in ids:
        if (credentials := credentials_made_with(session_id)) is not None:
            local.setdefault(id(credentials), (credentials, set()))[1].add(session_id)
    accounts: list[_Account] = [
        ("the credentials it was made with", c, only) for c, only in local.values()
    ]
    for name in await credentials_blocks_of(flow_run):
        try:
            accounts.append((f"credentials block {name!r}", await load_credentials(name), None))
        except Exception as exc:  # noqa: BLE001 - the other accounts may still reach it
            logger.error(
                "Flow run %s: cannot load the credentials block %r its sessions were made"
                " with (%s); trying the ARR_* settings instead",
                flow_run.name,
                name,
                exc,
            )
    accounts.append(("the ARR_* settings", None, None))
    return accounts


async def _stop_one(
    arr: ArrClient,
    flow_run: FlowRun,
    state: State[Any],
    session_id: str,
    label: str,
    logger: _Logger,
) -> bool:
    """Stop one session in ``arr``'s account; False when the account does not know it
    (or the stop failed: the next account gets a try)."""
    seen: list[Session] = []
    asked = arr.clock.time()
    try:
        outcome = await _stop_if_active(arr, session_id, logger, seen)
    except ArrError as exc:
        logger.error(
            "Flow run %s (%s): could not stop session %s with %s: %s",
            flow_run.name,
            state.name,
            session_id,
            label,
            exc,
        )
        return False
    if outcome == "absent":
        return False  # unknown to this account: the next one may know it
    if outcome == "stopped":
        final = await final_status(arr, session_id)
        _report_hook_stop(arr, flow_run, state, session_id, seen, asked, final, logger)
    return True


def _report_hook_stop(
    arr: ArrClient,
    flow_run: FlowRun,
    state: State[Any],
    session_id: str,
    seen: list[Session],
    asked: float,
    final_status: str | None,
    logger: _Logger,
) -> None:
    """Log and emit a stop made by a hook: which hook, which session, how fast, the bill."""
    now = arr.clock.time()
    took = now - asked
    session = seen[0] if seen else None
    ran = _ran_seconds(session, now)
    logger.warning(
        "Flow run %s is %s: the %s hook stopped its session %s in %s (ran %s; billed %s)",
        flow_run.name,
        state.name,
        "on_crashed" if state.is_crashed() else "on_cancellation",
        session_id,
        format_duration(took),
        format_duration(ran),
        format_billing(ran),
    )
    size = session.size.value if session is not None and session.size else None
    emit_session_event(
        "arr.session.stopped",
        session_id,
        run_of(flow_run),
        session_payload(
            session_id,
            size=size,
            api_version=arr.api_version,
            elapsed_seconds=ran,
            price_per_hour=arr.settings.price_per_hour(size) if size else None,
            currency=arr.settings.price_currency,
            stopped_by=f"hook:{state.name}",
            reason=f"flow run {state.name}",
            final_status=final_status,
            stop_seconds=round(took, 1),
        ),
    )


def _ran_seconds(session: Session | None, now: float) -> float | None:
    """How long a session has run, from what the service says of it."""
    if session is None:
        return None
    if session.created_at is not None:
        return max(0.0, now - session.created_at.timestamp())
    return session.elapsed.total_seconds() if session.elapsed is not None else None


async def _stop_if_active(
    arr: ArrClient,
    session_id: str,
    logger: _Logger,
    seen: list[Session] | None = None,
) -> Literal["stopped", "over", "absent"]:
    """Stop the session if it is still active in ``arr``'s account (``seen`` gets the
    session as read before the stop)."""
    # Look first: a stop of a session already over is also answered 204, and the event
    # must say who really stopped it. If the look fails, stop anyway: stopping is
    # idempotent, and this may be the only layer left.
    try:
        current = await arr.get_session(session_id)
        if seen is not None:
            seen.append(current)
        if not current.status.is_active:
            return "over"
    except SessionNotFoundError:
        return "absent"
    except ArrError as exc:
        logger.warning("Could not read session %s (%s); stopping it", session_id, exc)
    return "stopped" if await arr.stop_session(session_id) else "absent"
