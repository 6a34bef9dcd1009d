"""The orphan reaper: the last line of teardown.

Sessions are tied to the flow run that created them by the run's ``arr-session:<id>`` tag
(and, with the 2021-01-01 API, by the ``pf-<flow run id>-`` prefix of the ID the flow
chose). The reaper lists the account's active sessions and stops those whose owning flow
run is over (Completed, Failed, Cancelled, Crashed) or no longer exists, once a grace
period has passed. It never stops a session it cannot tie to one of our flow runs, unless
told to with an age threshold (``stop_untracked_older_than_minutes``). ``dry_run`` only
reports.

Which accounts: the one of ``credentials_block`` when given; otherwise every account it
knows, the ``ARR_*`` settings' and each saved ``RemoteRenderingCredentials`` block's
(once each), since a flow run may have used any saved block; its hooks find it by the
name the run recorded, the reaper by visiting them all.

Two ways to run it. Scheduled (hourly, the backstop): every active session of every
account. Triggered (the deployment's automation, when any flow run ends Crashed or
Cancelled): ``owner_flow_run`` names the run that ended, and only the sessions that run
owns are looked at, by its tags *as they are now* (read from the API) and the ID prefix.
The trigger cannot filter on the run's tags itself: Prefect's server attaches a run's tags
to its state events from a cache filled at the run's first state change and kept for
``PREFECT_API_EVENTS_RELATED_RESOURCE_CACHE_TTL`` (5 minutes), so a run that tagged itself
``arr-session:<id>`` after starting, and ends within those minutes, ends with events that
do not carry that tag. The reaper's own check does the filtering instead: a run that owned
no session costs one short reaper run that reads one flow run and lists each account's
sessions once, and stops nothing.

What it stopped (or would stop) is published as a table artifact and an
``arr.reaper.stopped`` event (``arr.reaper.would-stop`` in a dry run) per session.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from prefect import flow, get_client
from prefect.artifacts import acreate_table_artifact
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from arr_prefect.client import ArrClient
from arr_prefect.credentials import (
    RemoteRenderingCredentials,
    load_credentials,
    open_client_for,
    saved_credentials_names,
)
from arr_prefect.errors import ArrError, ConfigurationError
from arr_prefect.flows.session import OWNER_TAG_PREFIX, emit_session_event
from arr_prefect.models import Session
from arr_prefect.tasks.sessions import run_logger

__all__ = ["ReapDecision", "ReapReport", "reap_orphaned_sessions"]

_PREFIXED_ID = re.compile(
    r"^pf-(?P<run>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-", re.IGNORECASE
)

Action = Literal["stopped", "would stop", "kept", "stop failed"]


class ReapDecision(BaseModel):
    """What the reaper decided for one active session, and why."""

    session_id: str
    account: str | None = None
    owner_flow_run: str | None
    owner_state: str | None
    action: Action
    reason: str


class ReapReport(BaseModel):
    """The reaper's run: every active session it saw and what it did."""

    dry_run: bool
    decisions: list[ReapDecision]

    @property
    def stopped(self) -> list[str]:
        return [d.session_id for d in self.decisions if d.action == "stopped"]

    @property
    def would_stop(self) -> list[str]:
        return [d.session_id for d in self.decisions if d.action == "would stop"]


async def _owner_of(session: Session) -> tuple[FlowRun | None, bool]:
    """The flow run that owns ``session``, and whether the session is ours at all.

    Returns ``(run, True)`` when a run owns it, ``(None, True)`` when it is ours but the
    run no longer exists, and ``(None, False)`` when nothing ties it to our flow runs.
    """
    async with get_client() as prefect:
        runs = await prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"{OWNER_TAG_PREFIX}{session.id}"])
            ),
            limit=1,
        )
        if runs:
            return runs[0], True
        match = _PREFIXED_ID.match(session.id)
        if match is None:
            return None, False
        try:
            return await prefect.read_flow_run(UUID(match["run"])), True
        except ObjectNotFound:
            return None, True


def _session_age(session: Session, now: datetime) -> timedelta | None:
    if session.created_at is not None:
        return now - session.created_at
    return session.elapsed  # v1 reports only the time since Ready: a lower bound


def _flow_run_id(value: str) -> UUID:
    """A flow-run ID, given bare or as its event resource ID ``prefect.flow-run.<id>``
    (what the trigger's ``{{ event.resource.id }}`` renders to)."""
    try:
        return UUID(value.strip().removeprefix("prefect.flow-run."))
    except ValueError:
        raise ConfigurationError(
            f"owner_flow_run {value!r} is neither a flow-run ID nor prefect.flow-run.<id>"
        ) from None


class _Scope:
    """A triggered reaper's view: one flow run and the sessions it owns."""

    def __init__(self, run: FlowRun | None, run_id: UUID) -> None:
        self.run = run
        self.run_id = run_id
        tags = run.tags if run is not None else []
        self.tagged = {t[len(OWNER_TAG_PREFIX) :] for t in tags if t.startswith(OWNER_TAG_PREFIX)}

    def owns(self, session: Session) -> bool:
        if session.id in self.tagged:
            return True
        match = _PREFIXED_ID.match(session.id)
        return match is not None and UUID(match["run"]) == self.run_id

    def grace_left(self, grace: timedelta, now: datetime) -> float:
        """Seconds until the run has been over for ``grace`` (0 if it is not over)."""
        state = self.run.state if self.run is not None else None
        if self.run is None or state is None or not state.is_final():
            return 0.0
        ended = self.run.end_time or state.timestamp
        return max(0.0, (ended + grace - now).total_seconds())

    @classmethod
    async def of(cls, owner_flow_run: str) -> _Scope:
        run_id = _flow_run_id(owner_flow_run)
        async with get_client() as prefect:
            try:
                run: FlowRun | None = await prefect.read_flow_run(run_id)
            except ObjectNotFound:
                run = None
        return cls(run, run_id)


def _decide(
    session: Session,
    owner: FlowRun | None,
    ours: bool,
    *,
    now: datetime,
    grace: timedelta,
    untracked_age: timedelta | None,
) -> tuple[bool, str]:
    """Whether to stop the session, and the reason either way."""
    if owner is not None:
        state = owner.state
        if state is None or not state.is_final():
            return False, f"owner is {state.name if state else 'without a state'}"
        ended = owner.end_time or state.timestamp
        since = now - ended if ended is not None else grace
        if since < grace:
            return False, f"owner ended {state.name} {since.total_seconds():.0f}s ago (grace)"
        return True, f"owner ended {state.name} {since.total_seconds():.0f}s ago"
    age = _session_age(session, now)
    if ours:
        if age is not None and age < grace:
            return False, "owner flow run not found, session within the grace period"
        return True, "owner flow run no longer exists"
    if untracked_age is None:
        return False, "not tied to any of our flow runs (not ours to stop)"
    if age is None or age < untracked_age:
        return False, "untracked, younger than the age threshold"
    return True, f"untracked and older than {untracked_age.total_seconds() / 60:.0f} min"


async def _reap_account(
    arr: ArrClient,
    label: str,
    *,
    grace: timedelta,
    untracked_age: timedelta | None,
    dry_run: bool,
    scope: _Scope | None = None,
) -> list[ReapDecision]:
    """Decide (and act) for every active session of ``arr``'s account (only those the
    ``scope``'s run owns, when given)."""
    logger = run_logger()
    decisions: list[ReapDecision] = []
    sessions = await arr.list_sessions()
    now = datetime.fromtimestamp(arr.clock.time(), tz=UTC)
    prefect_now = datetime.now(UTC)
    for session in sessions:
        if scope is not None:
            if not scope.owns(session):
                continue
            owner, ours = scope.run, True
        else:
            owner, ours = await _owner_of(session)
        stop, reason = _decide(
            session,
            owner,
            ours,
            now=prefect_now if owner is not None else now,
            grace=grace,
            untracked_age=untracked_age,
        )
        action: Action = "kept"
        if stop and dry_run:
            action = "would stop"
        elif stop:
            try:
                await arr.stop_session(session.id)
                action = "stopped"
            except ArrError as exc:
                action, reason = "stop failed", f"{reason}; stop failed: {exc}"
        decision = ReapDecision(
            session_id=session.id,
            account=label,
            owner_flow_run=str(owner.id) if owner is not None else None,
            owner_state=owner.state.name if owner is not None and owner.state else None,
            action=action,
            reason=reason,
        )
        decisions.append(decision)
        logger.info("Session %s: %s (%s)", session.id, action, reason)
        if action in ("stopped", "would stop"):
            emit_session_event(
                "arr.reaper.stopped" if action == "stopped" else "arr.reaper.would-stop",
                session.id,
                decision.owner_flow_run,
                {"reason": reason, "dry_run": dry_run},
            )
    return decisions


@flow(name="reap-orphaned-sessions", log_prints=True)
async def reap_orphaned_sessions(
    grace_minutes: Annotated[float, Field(ge=0)] = 10.0,
    dry_run: bool = False,
    stop_untracked_older_than_minutes: Annotated[float | None, Field(gt=0)] = None,
    credentials_block: str | None = None,
    owner_flow_run: str | None = None,
) -> ReapReport:
    """Stop sessions whose owning flow run is over or gone; report what was stopped.

    Args:
        grace_minutes: Leave a session alone until its owner has been over this long
            (teardown and hooks get the first chance).
        dry_run: Only report what would be stopped.
        stop_untracked_older_than_minutes: Also stop sessions that no flow run of ours
            owns once they are this old. Off by default: the reaper never stops what it
            cannot tie to one of our runs unless told to.
        credentials_block: Reap only the account of this saved Remote Rendering
            Credentials block. Empty: the ARR_* settings' account and every saved block's.
        owner_flow_run: Look only at the sessions this flow run owns (its ID, or its
            event resource ID ``prefect.flow-run.<id>``): what the deployment's trigger
            passes when a run ends Crashed or Cancelled. Empty: every active session.

    Returns:
        What was decided for each active session (stopped, would stop, kept) and why;
        also published as the run's ``reaped-sessions`` table artifact.

    Raises:
        ArrError: An account could not be reaped (its block cannot be loaded, or the
            service refused); the other accounts are reaped first.
    """
    logger = run_logger()
    failures: list[tuple[str, ArrError]] = []
    grace = timedelta(minutes=grace_minutes)
    untracked_age = (
        None
        if stop_untracked_older_than_minutes is None
        else timedelta(minutes=stop_untracked_older_than_minutes)
    )
    scope = await _Scope.of(owner_flow_run) if owner_flow_run else None
    if scope is not None:
        await _wait_out_owner_grace(scope, grace)
    accounts = await _accounts_to_reap(credentials_block, failures)
    decisions: list[ReapDecision] = []
    seen: set[tuple[str, str]] = set()
    for label, credentials in accounts:
        try:
            async with open_client_for(credentials) as arr:
                account = (arr.settings.service_base_url, arr.account_id)
                if account in seen:
                    continue  # two blocks (or a block and ARR_*) for the same account
                seen.add(account)
                decisions += await _reap_account(
                    arr,
                    label,
                    grace=grace,
                    untracked_age=untracked_age,
                    dry_run=dry_run,
                    scope=scope,
                )
        except ConfigurationError as exc:
            if credentials is None and len(accounts) > 1:
                logger.info("No account in the ARR_* settings (%s); reaping the blocks'", exc)
                continue
            failures.append((label, exc))
        except ArrError as exc:
            failures.append((label, exc))
    report = ReapReport(dry_run=dry_run, decisions=decisions)
    await _publish_report(report)
    if failures:
        if len(accounts) == 1:
            raise failures[0][1]
        raise ArrError(
            f"the reaper could not reap {len(failures)} of {len(accounts)} accounts: "
            + "; ".join(f"{label}: {exc}" for label, exc in failures)
            + ". Fix or delete those credentials blocks (UI: Blocks)"
        )
    return report


async def _wait_out_owner_grace(scope: _Scope, grace: timedelta) -> None:
    """A reaper the trigger started for one run begins once that run's grace is over."""
    if scope.run is None:
        return
    logger = run_logger()
    if not scope.tagged:
        logger.info(
            "Flow run %s has no arr-session tag: looking only for sessions named after it",
            scope.run.name,
        )
    elif (left := scope.grace_left(grace, datetime.now(UTC))) > 0:
        # A worker starts a scheduled run a few seconds early (its prefetch), so the
        # trigger's reaper can begin just inside the grace it was scheduled to outlast:
        # wait it out rather than keep what it was called for.
        logger.info("Waiting %.0f s for the owner's grace period to end", left)
        await asyncio.sleep(left)


async def _accounts_to_reap(
    credentials_block: str | None, failures: list[tuple[str, ArrError]]
) -> list[tuple[str, RemoteRenderingCredentials | None]]:
    """The accounts to reap: the named block's, else the ARR_* settings' and every saved
    block's (a block that cannot be loaded goes to ``failures``)."""
    if credentials_block:
        return [(f"block {credentials_block}", await load_credentials(credentials_block))]
    accounts: list[tuple[str, RemoteRenderingCredentials | None]] = [("ARR_* settings", None)]
    for name in await saved_credentials_names():
        try:
            accounts.append((f"block {name}", await load_credentials(name)))
        except ConfigurationError as exc:
            failures.append((f"block {name}", exc))
    return accounts


async def _publish_report(report: ReapReport) -> None:
    """The ``reaped-sessions`` table artifact and the summary log line."""
    decisions = report.decisions
    acted = [d for d in decisions if d.action != "kept"]
    await acreate_table_artifact(
        table=[d.model_dump() for d in acted] or [{"result": "no orphaned sessions"}],
        key="reaped-sessions",
        description=(
            f"{'Dry run: ' if report.dry_run else ''}{len(acted)} of {len(decisions)} active"
            " sessions acted on"
        ),
    )
    run_logger().info(
        "Reaper: %d active sessions, %d stopped, %d would stop, %d kept",
        len(decisions),
        len(report.stopped),
        len(report.would_stop),
        sum(d.action == "kept" for d in decisions),
    )
