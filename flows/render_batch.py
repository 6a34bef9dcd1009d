"""The ``render-batch`` flow: provision a session, run a rendering job, always tear down."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Annotated, Any, Literal

import anyio
from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import BaseModel, Field

from arr_prefect.credentials import load_credentials
from arr_prefect.errors import InvalidInputError
from arr_prefect.flows.jobs import DEFAULT_JOB, InvalidJobError, JobSpec, run_job, validate_job
from arr_prefect.flows.session import SessionReport, rendering_session, stop_owned_sessions
from arr_prefect.models import SessionSize, parse_lease
from arr_prefect.settings import load_settings
from arr_prefect.tasks.sessions import run_logger

__all__ = ["RenderSummary", "render_batch"]

JobOutcome = Literal["succeeded", "failed", "timed out", "cancelled", "not started"]

# The flow's own timeout. Sessions cannot live past 24 h, so a day and an hour is the
# most a run can need; deployments can shorten it with this variable in job_variables.env.
FLOW_TIMEOUT_SECONDS = float(os.environ.get("ARR_RENDER_BATCH_TIMEOUT_SECONDS", 25 * 3600))


class RenderSummary(BaseModel):
    """What a render-batch run did: returned by the flow and shown as an artifact."""

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

    def markdown(self) -> str:
        """The summary as a Markdown table."""
        rows = [
            ("Session", f"`{self.session_id}`" if self.session_id else "none created"),
            ("Size", self.size),
            ("API version", self.api_version),
            (
                "Time to Ready",
                "-"
                if self.time_to_ready_seconds is None
                else f"{self.time_to_ready_seconds:.0f} s",
            ),
            ("Job", f"`{self.job}`"),
            ("Job outcome", self.job_outcome + (f": {self.job_error}" if self.job_error else "")),
            ("Lease renewals", str(self.lease_renewals)),
            ("Session final status", self.session_final_status or "-"),
            ("Stopped by", self.stopped_by or "-"),
            ("Billed minutes", "-" if self.billed_minutes is None else str(self.billed_minutes)),
            (
                "Waited for a session slot",
                "-"
                if self.session_slot_wait_seconds is None
                else f"{self.session_slot_wait_seconds:.0f} s",
            ),
        ]
        if self.estimated_cost is not None:
            rows.append(("Estimated cost", f"{self.estimated_cost:.2f}"))
        body = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in rows)
        return f"## Render batch\n\n| | |\n|---|---|\n{body}\n"


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
        credentials_block: Name of a saved Remote Rendering Credentials block (UI: Blocks)
            holding the ARR account to use. Empty: the worker's ARR_* settings.
    """
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
    # A block only by name: the run's parameters (and so the UI) never hold the key.
    credentials = await load_credentials(credentials_block) if credentials_block else None
    settings = credentials.to_settings() if credentials is not None else load_settings()

    report = SessionReport()
    outcome: JobOutcome = "not started"
    job_error: str | None = None
    try:
        async with rendering_session(
            session_size,
            lease=rolling,
            ready_timeout=ready_timeout_minutes * 60,
            models=models,
            report=report,
            ready_timeout_includes_slot_wait=ready_timeout_includes_slot_wait,
            credentials=credentials,
        ) as session:
            logger.info(
                "Session %s Ready after %.0fs; running job %s",
                session.id,
                report.time_to_ready or 0.0,
                job.label,
            )
            outcome = "failed"
            await run_job(job, session)
            outcome = "succeeded"
    except BaseException as exc:
        if outcome != "succeeded":
            outcome = _outcome_of(exc, outcome)
            job_error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary = _summary(report, job, outcome, job_error, settings.price_per_hour(size))
        await _publish(summary)
    logger.info(
        "Render batch done: session %s, %s, billed %s min",
        summary.session_id,
        summary.job_outcome,
        summary.billed_minutes,
    )
    return summary


def _outcome_of(exc: BaseException, outcome: JobOutcome) -> JobOutcome:
    if outcome == "not started":
        return outcome
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        return "cancelled"
    return "failed"


def _summary(
    report: SessionReport,
    job: JobSpec,
    outcome: JobOutcome,
    job_error: str | None,
    price_per_hour: float | None,
) -> RenderSummary:
    billed = report.billed_minutes
    return RenderSummary(
        session_id=report.session_id,
        size=report.size or "-",
        api_version=report.api_version or "-",
        time_to_ready_seconds=report.time_to_ready,
        job=job.label,
        job_outcome=outcome,
        job_error=job_error,
        lease_renewals=report.lease_renewals,
        session_final_status=report.final_status,
        stopped_by=report.stopped_by,
        billed_minutes=billed,
        session_slot_wait_seconds=report.slot_wait_seconds,
        estimated_cost=(
            None if billed is None or price_per_hour is None else billed / 60 * price_per_hour
        ),
    )


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
    run_logger().info("Summary:\n%s", summary.markdown())
