"""The ``render-batch`` flow: provision a session, run a rendering job, always tear down."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
import warnings
from datetime import timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio
from prefect import flow, get_client
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.objects import StateType
from prefect.exceptions import TerminationSignal
from pydantic import BaseModel, Field

from arr_prefect.clock import default_clock
from arr_prefect.credentials import (
    RemoteRenderingCredentials,
    checked_credentials,
    load_credentials,
)
from arr_prefect.errors import InvalidInputError, SessionExpiredError, SessionFailedError
from arr_prefect.flows.cancel_noise import drop_after_prefect_cancel
from arr_prefect.flows.jobs import (
    DEFAULT_JOB,
    InvalidJobError,
    JobSpec,
    JobTimeoutError,
    run_job,
    validate_job,
)
from arr_prefect.flows.progress import JOB_PROGRESS_KEY, ProgressArtifact, job_progress
from arr_prefect.flows.rendering import arendering_session
from arr_prefect.flows.session import (
    SessionReport,
    WorkerLostError,
    stop_owned_sessions,
)
from arr_prefect.models import SessionSize, parse_lease
from arr_prefect.settings import load_settings
from arr_prefect.tasks.sessions import run_logger
from arr_prefect.units import (
    PRICE_HINT,
    estimated_cost,
    format_billing,
    format_duration,
    format_money,
    round_seconds,
)

__all__ = ["RenderSummary", "TimelinePhase", "render_batch"]

JobOutcome = Literal["succeeded", "failed", "timed out", "cancelled", "not started"]

# The flow's own timeout. Sessions cannot live past 24 h, so a day and an hour is the
# most a run can need; deployments can shorten it with this variable in job_variables.env.
FLOW_TIMEOUT_SECONDS = float(os.environ.get("ARR_RENDER_BATCH_TIMEOUT_SECONDS", 25 * 3600))


class TimelinePhase(BaseModel):
    """One phase of a run: when it began (seconds after the create request) and how long."""

    name: str
    start_seconds: float
    seconds: float | None


class RenderSummary(BaseModel):
    """What a render-batch run did: returned by the flow and shown as an artifact.

    Times are seconds (one decimal) counted from the session's create request; money is in
    ``currency``. ``billed_minutes`` counts every minute started between the create
    request and the stop, as the service billed (``run_seconds`` is the exact time).
    """

    session_id: str | None
    size: str
    api_version: str
    time_to_ready_seconds: float | None
    job: str
    job_outcome: JobOutcome
    job_error: str | None = None
    lease_renewals: int
    session_final_status: str | None
    stopped_by: str | None
    billed_minutes: int | None
    estimated_cost: float | None = None
    session_slot_wait_seconds: float | None = None
    """Real seconds waited for a slot of the account's session quota (None: no quota)."""
    currency: str = "USD"
    run_seconds: float | None = None
    job_seconds: float | None = None
    stop_seconds: float | None = None
    ended_by: str | None = None
    """Who or what ended the run when it did not succeed (a cancel, a timeout, ...)."""
    timeline: list[TimelinePhase] = Field(default_factory=list)

    def _cost(self) -> str:
        if self.estimated_cost is not None:
            return format_money(self.estimated_cost, self.currency)
        return "-" if self.billed_minutes is None else PRICE_HINT

    def _outcome(self) -> str:
        text: str = self.job_outcome
        if self.ended_by:
            text += f" ({self.ended_by})"
        if self.job_error:
            text += f": {self.job_error}"
        return text

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (label, value) pairs, for the artifact and the demo."""
        return [
            ("Session", f"`{self.session_id}`" if self.session_id else "none created"),
            ("Size / API", f"{self.size} / {self.api_version}"),
            ("Job", f"`{self.job}`"),
            ("Outcome", self._outcome()),
            *(
                [("Waited for a session slot", format_duration(self.session_slot_wait_seconds))]
                if self.session_slot_wait_seconds is not None
                else []
            ),
            ("Time to Ready", format_duration(self.time_to_ready_seconds) + " after create"),
            ("Job ran", format_duration(self.job_seconds)),
            ("Lease renewals", str(self.lease_renewals)),
            (
                "Stopped",
                (f"by {self.stopped_by} in {format_duration(self.stop_seconds)}")
                if self.stopped_by
                else "not by this run (see the log)",
            ),
            ("Final status", self.session_final_status or "-"),
            ("Billed", format_billing(self.run_seconds)),
            ("Estimated cost", self._cost()),
        ]

    def timeline_markdown(self) -> str:
        """The phases as a table with a bar for each, to read at a glance."""
        total = max((p.start_seconds + (p.seconds or 0.0) for p in self.timeline), default=0.0)
        width = 24
        lines = ["| Phase | Began | Took | |", "|---|---|---|---|"]
        for phase in self.timeline:
            took = phase.seconds or 0.0
            if total > 0:
                lead = round(phase.start_seconds / total * width)
                bar = max(1, round(took / total * width))
                bar = min(bar, width - lead) if lead < width else 1
                chart = "`" + "·" * lead + "█" * bar + "·" * max(0, width - lead - bar) + "`"
            else:
                chart = ""
            lines.append(
                f"| {phase.name} | +{format_duration(phase.start_seconds)}"
                f" | {format_duration(phase.seconds)} | {chart} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The summary as Markdown: a two-column table and the timeline."""
        body = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in self.rows())
        text = f"## Render batch: {self.job_outcome}\n\n| What | This run |\n|---|---|\n{body}\n"
        if self.timeline:
            text += f"\n### Timeline (from the create request)\n\n{self.timeline_markdown()}\n"
        return text

    def text(self) -> str:
        """The summary as aligned plain text (the demo prints it)."""
        lines = [f"  {k:<15} {v.replace('`', '')}" for k, v in self.rows()]
        for phase in self.timeline:
            lines.append(
                f"  {'  ' + phase.name:<15} +{format_duration(phase.start_seconds)},"
                f" took {format_duration(phase.seconds)}"
            )
        return "\n".join(lines)

    def one_line(self) -> str:
        """The compact summary the run logs."""
        parts = [
            f"session {self.session_id or 'none'}",
            f"{self.size}/{self.api_version}",
            self._outcome(),
            f"Ready after {format_duration(self.time_to_ready_seconds)}",
            f"job {format_duration(self.job_seconds)}",
            f"stopped by {self.stopped_by or 'nobody'} in {format_duration(self.stop_seconds)}",
            f"billed {format_billing(self.run_seconds)}",
        ]
        if self.estimated_cost is not None:
            parts.append(f"~{format_money(self.estimated_cost, self.currency)}")
        return "Render batch: " + ", ".join(parts)


def _job_spec(
    job_callable: str | None,
    job_command: list[str] | None,
    job_deployment: str | None,
    job_parameters: dict[str, Any] | None,
    job_timeout_minutes: float,
) -> JobSpec:
    given = [
        (kind, value)
        for kind, value in (
            ("callable", job_callable),
            ("command", job_command),
            ("deployment", job_deployment),
        )
        if value
    ]
    if len(given) > 1:
        raise InvalidJobError(
            "give at most one of job_callable, job_command or job_deployment, got "
            + ", ".join(kind for kind, _ in given)
        )
    if not job_timeout_minutes > 0:
        raise InvalidJobError(f"job_timeout_minutes must be positive, got {job_timeout_minutes!r}")
    kind, target = given[0] if given else ("callable", DEFAULT_JOB)
    return JobSpec(
        kind=kind,
        target=target,
        parameters=job_parameters or {},
        timeout_seconds=job_timeout_minutes * 60,
    )


@flow(
    name="render-batch",
    on_cancellation=[stop_owned_sessions],
    on_crashed=[stop_owned_sessions],
    timeout_seconds=FLOW_TIMEOUT_SECONDS,
    log_prints=True,
    # The summary is the run's result, so run_deployment callers read it with
    # state.result(). JSON, not pickle: it holds no secret (no key, no token) and is read
    # back as a RenderSummary by whoever has arr_prefect installed. Stored where Prefect's
    # default result storage says (README: PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK).
    persist_result=True,
    result_serializer="json",
)
async def render_batch(
    size: Literal["standard", "premium"] = "standard",
    job_callable: str | None = None,
    job_command: list[str] | None = None,
    job_deployment: str | None = None,
    job_parameters: dict[str, Any] | None = None,
    job_timeout_minutes: Annotated[float, Field(gt=0)] = 60.0,
    lease_minutes: Annotated[float, Field(ge=1, le=1440)] = 10.0,
    ready_timeout_minutes: Annotated[float, Field(gt=0, le=1440)] = 15.0,
    models: list[str] | None = None,
    ready_timeout_includes_slot_wait: bool = False,
    credentials_block: str | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> RenderSummary:
    """Render a batch on a fresh ARR session, and stop the session whatever happens.

    Creates a session, waits until it is Ready, runs the job while a lease keeper renews a
    short rolling lease, then stops the session: on success, job failure, timeout, cancel
    (from the UI or API) or crash. Returns a summary, also shown as an artifact.

    Args:
        size: VM size of the session: "standard" or "premium" (priced differently).
        job_callable: Python job as "package.module:function", called with the Ready
            session and the job parameters. Default (no job given): the sample job
            "arr_prefect.flows.sample_job:render_frames".
        job_command: Job as a command (list of arguments), run with ARR_SESSION_ID,
            ARR_SESSION_HOSTNAME, ARR_SESSION_HANDSHAKE_PORT in its environment; exit
            code 0 means success.
        job_deployment: Job as a Prefect deployment "flow-name/deployment-name", run with
            session_id, hostname, handshake_port, arr_inspector_port and size added to the
            job parameters; it must end Completed.
        job_parameters: Keyword arguments for a callable job, or parameters for a
            deployment job.
        job_timeout_minutes: The job is stopped and the run fails after this long.
        lease_minutes: Rolling lease: the session never has more than this left and is
            renewed every half of it while the job runs, so a killed worker leaks at most
            this long. 1 to 1440.
        ready_timeout_minutes: Give up (and stop the session) if it is not Ready by then.
        models: URLs of asset containers to preload into the session.
        ready_timeout_includes_slot_wait: Count the wait for a slot of the account's
            session quota (a Prefect global concurrency limit) against the ready timeout.
            Off by default: the run waits for a slot as long as it takes.
        credentials_block: Deprecated since 0.2.0, use `credentials`: the name of a saved
            Remote Rendering Credentials block.
        credentials: The saved Remote Rendering Credentials block (UI: Blocks) holding
            the ARR account to use; the run form offers a picker of them. Empty: the
            worker's ARR_* settings.

    Returns:
        The run's :class:`RenderSummary` (also its persisted result and its
        ``render-batch-summary`` artifact).

    Raises:
        InvalidInputError: Bad parameters, before any session exists.
        JobFailedError: The job failed (the session was stopped).
        JobTimeoutError: The job ran past ``job_timeout_minutes`` (the session was stopped).
        SessionEndedError: The session ended in Error, expired or was stopped elsewhere.
        ReadyTimeoutError: The session was not Ready in time (it was stopped).
    """
    started = time.monotonic()  # a moment after the engine armed the flow's timeout
    logger = run_logger()
    # Every check happens before a session exists: bad input costs nothing.
    session_size = SessionSize.parse(size)
    job = _job_spec(job_callable, job_command, job_deployment, job_parameters, job_timeout_minutes)
    rolling = parse_lease(timedelta(minutes=lease_minutes))
    if rolling < timedelta(minutes=1):
        raise InvalidInputError(f"lease_minutes must be at least 1, got {lease_minutes!r}")
    if not ready_timeout_minutes > 0:
        raise InvalidInputError(
            f"ready_timeout_minutes must be positive, got {ready_timeout_minutes!r}"
        )
    await validate_job(job)
    credentials = await _credentials(credentials, credentials_block)
    # A configuration error, too, before any session exists.
    _ = credentials.to_settings() if credentials is not None else load_settings()

    report = SessionReport()
    outcome: JobOutcome = "not started"
    job_error: str | None = None
    ended_by: str | None = None
    clock = default_clock()
    job_times: list[float] = []
    job_artifact = ProgressArtifact(JOB_PROGRESS_KEY)
    try:
        async with arendering_session(
            session_size,
            lease=rolling,
            ready_timeout=ready_timeout_minutes * 60,
            models=models,
            report=report,
            ready_timeout_includes_slot_wait=ready_timeout_includes_slot_wait,
            credentials=credentials,
        ) as session:
            logger.info("Running job %s on session %s", job.label, session.id)
            outcome = "failed"
            job_times.append(clock.time())
            try:
                with job_progress(job_artifact):
                    await run_job(job, session)
            finally:
                job_times.append(clock.time())
            outcome = "succeeded"
    except BaseException as exc:
        if outcome != "succeeded":
            outcome, ended_by, job_error = await _ending(exc, outcome, started)
        raise
    finally:
        summary = _summary(report, job, outcome, job_error, ended_by, job_times)
        # The job's last progress is written now that the session is down (bounded).
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            await job_artifact.flush()
        await _publish(summary)
    return summary


CREDENTIALS_BLOCK_DEPRECATED = (
    "render_batch's credentials_block (a block's name) is deprecated since arr-prefect 0.2.0"
    " and will be removed in 1.0: pass the block as credentials (the UI's run form offers"
    " a picker; run_render_batch(credentials=block), or"
    " parameters={{'credentials': {{'$ref': {{'block_document_id': ...}}}}}})."
    " This run uses the block named {name!r}"
)


async def _credentials(
    credentials: RemoteRenderingCredentials | None, credentials_block: str | None
) -> RemoteRenderingCredentials | None:
    """The run's account: the block given, or the one the deprecated name designates.

    A block given as a parameter reaches the flow as a reference to its document (the run
    form's picker, ``run_render_batch``), which Prefect loads, so its key never is in the
    run's parameters; its fields are checked here by the same rules as a block loaded by
    name (a block saved from the UI was never checked by them).
    """
    if credentials is not None and credentials_block:
        raise InvalidInputError(
            "give credentials (the block) or credentials_block (its name, deprecated), not both"
        )
    if credentials_block:
        message = CREDENTIALS_BLOCK_DEPRECATED.format(name=credentials_block)
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        run_logger().warning("%s", message)  # a deployment's caller reads the run's log
        return await load_credentials(credentials_block)
    return checked_credentials(credentials) if credentials is not None else None


CANCELLED_FROM_PREFECT = "a cancel from the Prefect UI or API"


async def _ending(
    exc: BaseException, outcome: JobOutcome, started: float
) -> tuple[JobOutcome, str | None, str | None]:
    """What ended the run: its outcome, who or what ended it, and the job's error (None
    for a cancel or the flow's timeout: a bare CancelledError says nothing more)."""
    if _is_cancel(exc) and (timeout := _flow_timeout_passed(started)) is not None:
        by_timeout = f"the flow's timeout of {format_duration(timeout)}"
        return ("not started" if outcome == "not started" else "timed out"), by_timeout, None
    job_error = None if _is_cancel(exc) else _describe(exc)
    return _outcome_of(exc, outcome), await _ended_by(exc), job_error


def _describe(exc: BaseException) -> str:
    """``Type: message``, or just the type when the message is empty."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(
        exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | TerminationSignal
    )


def _flow_timeout_passed(started: float) -> float | None:
    """The flow's ``timeout_seconds`` if it has run out: the engine's timeout is an anyio
    cancel scope around the flow, which cancels it with a bare CancelledError (the
    engine raises its timeout error only once the flow has returned)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_ = context.flow if context is not None else None
    timeout = flow_.timeout_seconds if flow_ is not None else None
    if not timeout:
        return None
    # An enclosing cancel scope was cancelled (not a plain task.cancel()), and the time
    # is up. ``started`` is taken a moment after the engine armed the scope: 1 s of slack.
    scope_cancelled = anyio.current_effective_deadline() == -math.inf
    if scope_cancelled and time.monotonic() - started >= timeout - 1.0:
        return float(timeout)
    return None


def _signal_behind(exc: BaseException) -> TerminationSignal | None:
    """The TerminationSignal a cancellation stands for, if any.

    Prefect's SIGTERM handler raises TerminationSignal wherever the main thread is; an
    idle event loop is in ``select``, outside the flow's task, which asyncio.run's
    shutdown then cancels: the flow sees a CancelledError raised while the signal was
    being handled, so the signal is in its ``__context__`` chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TerminationSignal):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _outcome_of(exc: BaseException, outcome: JobOutcome) -> JobOutcome:
    if outcome == "not started":
        return outcome
    if isinstance(exc, TimeoutError):
        return "timed out"
    if _is_cancel(exc):
        return "cancelled"
    return "failed"


async def _ended_by(exc: BaseException) -> str | None:
    """Who or what ended the run, in words an operator can act on."""
    if isinstance(exc, WorkerLostError):
        return "the Prefect worker that started the run died"
    if isinstance(exc, SessionFailedError):
        return "the service ended the session in Error"
    if isinstance(exc, SessionExpiredError):
        return "the session's lease ran out"
    if isinstance(exc, JobTimeoutError):
        return "the job's timeout (job_timeout_minutes)"
    if isinstance(exc, TimeoutError):
        return "a timeout"
    if not _is_cancel(exc):
        return None
    if await _cancel_requested():
        return CANCELLED_FROM_PREFECT
    if (sent := _signal_behind(exc)) is not None:
        return f"signal {signal.Signals(sent.signal).name} sent to the flow-run process"
    if isinstance(exc, KeyboardInterrupt):
        return "Ctrl-C (KeyboardInterrupt)"
    return "cancellation of the task running the flow"


def _flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    return str(context.flow_run.id)


async def _cancel_requested() -> bool:
    """Whether the run's state says it was cancelled from the Prefect UI or API
    (bounded, shielded)."""
    run_id = _flow_run_id()
    if run_id is None:
        return False
    try:
        with anyio.CancelScope(shield=True), anyio.fail_after(10):
            async with get_client() as prefect:
                run = await prefect.read_flow_run(UUID(run_id))
    except Exception:  # noqa: BLE001 - the summary does without it
        return False
    return run.state is not None and run.state.type in (
        StateType.CANCELLING,
        StateType.CANCELLED,
    )


def _summary(
    report: SessionReport,
    job: JobSpec,
    outcome: JobOutcome,
    job_error: str | None,
    ended_by: str | None,
    job_times: list[float],
) -> RenderSummary:
    minutes = report.billed_minutes
    currency = report.currency or "USD"
    job_seconds = job_times[1] - job_times[0] if len(job_times) == 2 else None
    return RenderSummary(
        session_id=report.session_id,
        size=(report.size or "-").lower(),
        api_version=report.api_version or "-",
        time_to_ready_seconds=round_seconds(report.time_to_ready),
        job=job.label,
        job_outcome=outcome,
        job_error=job_error,
        lease_renewals=report.lease_renewals,
        session_final_status=report.final_status,
        stopped_by=report.stopped_by,
        billed_minutes=minutes,
        session_slot_wait_seconds=round_seconds(report.slot_wait_seconds),
        estimated_cost=estimated_cost(minutes, report.price_per_hour),
        currency=currency,
        run_seconds=round_seconds(report.run_seconds),
        job_seconds=round_seconds(job_seconds),
        stop_seconds=round_seconds(report.stop_seconds),
        ended_by=ended_by,
        timeline=_timeline(report, job_times),
    )


def _timeline(report: SessionReport, job_times: list[float]) -> list[TimelinePhase]:
    """create -> Ready -> job -> stop, each from the create request."""
    origin = report.created_at
    if origin is None:
        return []

    def phase(name: str, start: float | None, end: float | None) -> TimelinePhase | None:
        if start is None:
            return None
        return TimelinePhase(
            name=name,
            start_seconds=round(start - origin, 1),
            seconds=None if end is None else round(max(0.0, end - start), 1),
        )

    ready_end = report.ready_at or report.stop_started_at
    phases = [
        phase("create → Ready" if report.ready_at else "create → (never Ready)", origin, ready_end),
        phase(
            "job",
            job_times[0] if job_times else None,
            job_times[1] if len(job_times) == 2 else None,
        ),
        phase("stop", report.stop_started_at, report.stopped_at),
    ]
    return [p for p in phases if p is not None]


async def _publish(summary: RenderSummary) -> None:
    try:
        with anyio.CancelScope(shield=True), anyio.fail_after(30):
            await acreate_markdown_artifact(
                markdown=summary.markdown(),
                key="render-batch-summary",
                description="Session, timings and billing of this render-batch run",
            )
    except Exception as exc:  # noqa: BLE001 - the summary must not mask the run's outcome
        run_logger().warning("Could not publish the summary artifact: %s", exc)
    log = run_logger().info if summary.job_outcome == "succeeded" else run_logger().warning
    log("%s", summary.one_line())
    if summary.ended_by == CANCELLED_FROM_PREFECT and (run_id := _flow_run_id()) is not None:
        # Said who cancelled and what was stopped: Prefect's two false alarms may go.
        drop_after_prefect_cancel(run_id)
