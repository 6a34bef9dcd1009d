"""A render-batch run whose job is another deployment, run by the worker to completion.

``render_batch(job_deployment=...)`` starts the job deployment's flow run as a subflow of
the render-batch run (``run_deployment``'s default ``as_subflow``), handing it the Ready
session's details, and waits for it to end before the session is stopped. Here the
worker really runs both: render-batch, and prefect.yaml's ``sample-render-job``.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._stack import (
    LEASE_MINUTES,
    TIME_SCALE,
    Stack,
    StackError,
    parse_time,
    session_entry,
    tail,
)

pytestmark = pytest.mark.e2e

JOB_DEPLOYMENT = "sample-render-job/sample-render-job"
JOB = {"frames": 2, "seconds_per_frame": 30.0}
"""One emulated minute of sample frames: 3 real seconds."""
RUN_TIMEOUT = 180.0
"""Real seconds for both runs on a loaded 2-core machine (about 25 s alone)."""
CLOCK_TOLERANCE = 2.0
"""Emulated seconds (0.1 s real): the emulated instant of a Prefect timestamp is inferred
from one ledger read, half a loopback request wide. The margins measured are seconds."""


async def wait_final(prefect: PrefectClient, run_id: UUID, what: str, stack: Stack) -> FlowRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = await prefect.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            raise StackError(
                f"timed out after {RUN_TIMEOUT:.0f}s waiting for {what}: {run.state};"
                f" worker log:\n{tail(stack.processes['worker'].log)}"
            )
        await asyncio.sleep(0.25)


async def test_job_deployment_runs_to_completion_on_the_ready_session(
    live_worker: Stack,
) -> None:
    """The render-batch run ends Completed; its job, a run of the sample-render-job
    deployment, is its subflow run, ends Completed, got the session's details, and ran
    entirely while the session was Ready; then the session was stopped, nothing running."""
    stack = live_worker
    async with PrefectClient(stack.api_url) as prefect:
        deployment = await prefect.read_deployment_by_name("render-batch/render-batch")
        created = await prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "lease_minutes": LEASE_MINUTES,
                "ready_timeout_minutes": 10,
                "job_deployment": JOB_DEPLOYMENT,
                "job_parameters": JOB,
            },
            tags=["e2e", "job-deployment"],
        )
        batch = await wait_final(prefect, created.id, "the render-batch run to end", stack)
        assert batch.state is not None
        assert batch.state.name == "Completed", (batch.state, tail(stack.processes["worker"].log))
        [session_id] = [
            t.removeprefix(OWNER_TAG_PREFIX) for t in batch.tags if t.startswith(OWNER_TAG_PREFIX)
        ]

        # The job's flow run: the render-batch run's subflow run (a task run of the
        # render-batch run is its parent), of the job deployment.
        jobs = await prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[batch.id])
            ),
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[JOB_DEPLOYMENT.split("/")[1]])
            ),
        )
        assert len(jobs) == 1, jobs
        job = await wait_final(prefect, jobs[0].id, "the job's flow run to end", stack)
        assert job.parent_task_run_id is not None
        parent_task = await prefect.read_task_run(job.parent_task_run_id)
        assert parent_task.flow_run_id == batch.id, parent_task
        assert job.state is not None
        assert job.state.name == "Completed", job.state
        assert job.start_time is not None
        assert job.end_time is not None

    entry = session_entry(stack.ledger(), session_id)
    assert entry is not None
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped"), entry
    assert entry["ready_at"] is not None, entry
    # The job was handed this session's details.
    assert job.parameters["session_id"] == session_id, job.parameters
    assert job.parameters["hostname"] == entry["hostname"], (job.parameters, entry)
    assert job.parameters["frames"] == JOB["frames"], job.parameters

    # The job ran while the session was Ready: after Ready, and ended before the stop.
    # Prefect's wall-clock timestamps are mapped onto the emulator's (scaled) clock.
    emulated, wall = stack.emulated_now()

    def on_emulator(instant: float) -> float:
        return emulated + (instant - wall) * TIME_SCALE

    job_start = on_emulator(job.start_time.timestamp())
    job_end = on_emulator(job.end_time.timestamp())
    ready_at = parse_time(entry["ready_at"])
    ended_at = parse_time(entry["ended_at"])
    window = (
        f"session Ready at {entry['ready_at']}, ended at {entry['ended_at']}; job ran from"
        f" {job_start - ready_at:+.1f} s to {job_end - ready_at:+.1f} s after Ready"
        f" (emulated), the session ended {ended_at - ready_at:+.1f} s after Ready"
    )
    assert ready_at - CLOCK_TOLERANCE <= job_start, window
    assert job_end <= ended_at + CLOCK_TOLERANCE, window
    assert stack.ledger()["running"] == 0
