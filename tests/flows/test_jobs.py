"""Command jobs: whatever ends the job (its timeout, a cancel), no process of it survives.

The job is a real shell that starts a child of its own and writes both PIDs down; the test
ends the job and then checks each PID has exited (a zombie counts as exited).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.flows import JobTimeoutError, render_batch, rendering_session
from arr_prefect.flows.jobs import JobSpec, run_job
from arr_prefect.models import Session

pytestmark = [pytest.mark.usefixtures("arr"), pytest.mark.realtime_job]


NOBODY_RUNS = FlowFilter(name=FlowFilterName(any_=["arr-test-job-nobody-runs"]))


def job_writing_pids(path: Path) -> JobSpec:
    script = f'echo $$ > "{path}"; sleep 600 & echo $! >> "{path}"; wait'
    return JobSpec(kind="command", target=["sh", "-c", script])


def job_writing_pids_once_read(path: Path) -> JobSpec:
    """Like :func:`job_writing_pids`, but the PIDs are written only once the job's output
    is being read: first 100 KB of output, more than a pipe holds (64 KiB), so the shell
    blocks until ``run_job`` reads it. Until then ``run_job`` may still be starting the
    command, and a timeout there ends the job through the start-up path instead of the
    running job's teardown (which a test of that teardown would then never reach)."""
    script = (
        "i=0; while [ $i -lt 20 ]; do printf '%05000d\\n' 0; i=$((i+1)); done;"
        f' echo $$ > "{path}"; sleep 600 & echo $! >> "{path}"; wait'
    )
    return JobSpec(kind="command", target=["sh", "-c", script])


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in path.read_text().split()]
    except FileNotFoundError:
        return []


async def pids_written(path: Path) -> list[int]:
    """The job's two PIDs, once it has written them (it starts in a few milliseconds)."""
    for _ in range(3000):  # 30 s at most
        if len(pids := read_pids(path)) == 2:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"the job never wrote its PIDs to {path}")


def still_running(pids: list[int]) -> list[int]:
    """PIDs still running after a short grace (SIGTERM reaches the group at once)."""
    deadline = time.monotonic() + 5
    while (alive := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


async def test_job_timeout_ends_the_job_and_its_children(
    emulator: Emulator, clock: VirtualClock, tmp_path: Path
) -> None:
    """Past its timeout (on the run's clock, moved by the test) the running job's whole
    process group is ended, children included."""
    pid_file = tmp_path / "pids"
    job = job_writing_pids_once_read(pid_file).model_copy(update={"timeout_seconds": 60.0})

    async def pipeline() -> None:
        async with rendering_session(lease=timedelta(minutes=5)) as session:
            await run_job(job, session)

    task = asyncio.create_task(pipeline())
    pids = await pids_written(pid_file)
    assert [p for p in pids if running(p)] == pids
    clock.advance(60)
    with pytest.raises(JobTimeoutError):
        await asyncio.wait_for(task, 10)  # bounds a failure only: it ends at once
    assert still_running(pids) == []
    assert emulator.running() == []


async def test_job_timeout_counts_on_the_runs_clock(clock: VirtualClock) -> None:
    """The job's timeout is measured on the run's clock (real time in production, the
    emulator's time in tests and demos): not a moment early, and at once when it is due."""
    session = Session(id="s", status="Ready")
    job = JobSpec(
        kind="callable", target="tests.flows.sample_jobs:block_forever", timeout_seconds=60.0
    )
    task = asyncio.create_task(run_job(job, session))

    async def settle() -> None:
        # The job, once cancelled, ends within a few steps of the loop: give it many.
        for _ in range(100):
            await asyncio.sleep(0)

    await settle()
    clock.advance(59.9)
    await settle()
    assert not task.done(), "the job timed out before its timeout"
    clock.advance(0.1)
    await settle()
    assert task.done(), "the job did not time out when its timeout was due"
    with pytest.raises(JobTimeoutError, match="within 60s"):
        await task


async def test_cancel_ends_the_job_and_its_children(emulator: Emulator, tmp_path: Path) -> None:
    """A cancel of the pipeline (a flow's cancel, Ctrl-C, SIGTERM) ends the job's processes."""
    pid_file = tmp_path / "pids"

    async def pipeline() -> None:
        async with rendering_session(lease=timedelta(minutes=5)) as session:
            await run_job(job_writing_pids(pid_file), session)

    task = asyncio.create_task(pipeline())
    pids = await pids_written(pid_file)
    assert [p for p in pids if running(p)] == pids
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert still_running(pids) == []
    assert emulator.running() == []


@flow(name="arr-test-job-nobody-runs")
def job_nobody_runs(
    session_id: str | None = None,
    hostname: str | None = None,
    handshake_port: int | None = None,
    arr_inspector_port: int | None = None,
    size: str | None = None,
) -> None:
    """A job flow deployed to a pool with no worker: its runs stay Scheduled."""


async def test_deployment_job_past_its_timeout_is_cancelled(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """A deployment job that never starts (no worker) is cancelled when the job times out:
    its flow run ends Cancelled, not left Scheduled (or Cancelling, with nobody to finish
    it), and the session is stopped. The timeout is on the run's clock: the test moves it
    once the job's flow run exists."""
    async with get_client() as prefect:
        flow_id = await prefect.create_flow(job_nobody_runs)
        await prefect.create_deployment(
            flow_id=flow_id, name="no-worker", entrypoint="tests/flows/test_jobs.py:job_nobody_runs"
        )
        before = {r.id for r in await prefect.read_flow_runs(flow_filter=NOBODY_RUNS)}
        batch = asyncio.create_task(
            render_batch(job_deployment="arr-test-job-nobody-runs/no-worker", job_timeout_minutes=1)
        )
        for _ in range(600):  # 60 s at most: bounds a failure only
            runs = [
                r
                for r in await prefect.read_flow_runs(flow_filter=NOBODY_RUNS)
                if r.id not in before
            ]
            if runs or batch.done():
                break
            await asyncio.sleep(0.1)
        assert len(runs) == 1, (runs, batch)
        assert not batch.done()
        clock.advance(60)
        with pytest.raises(JobTimeoutError):
            await asyncio.wait_for(batch, 60)  # bounds a failure only
        job = await prefect.read_flow_run(runs[0].id)
    assert job.state is not None
    assert job.state.name == "Cancelled", job.state
    assert emulator.running() == []
