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

from arr_prefect.emulator import Emulator
from arr_prefect.flows import JobTimeoutError, render_batch, rendering_session
from arr_prefect.flows.jobs import JobSpec, run_job

pytestmark = [pytest.mark.usefixtures("arr"), pytest.mark.realtime_job]


def job_writing_pids(path: Path) -> JobSpec:
    script = f'echo $$ > "{path}"; sleep 600 & echo $! >> "{path}"; wait'
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
    emulator: Emulator, tmp_path: Path
) -> None:
    """Past its timeout the job's whole process group is ended, children included."""
    pid_file = tmp_path / "pids"
    job = job_writing_pids(pid_file).model_copy(update={"timeout_seconds": 1.0})
    with pytest.raises(JobTimeoutError):
        async with rendering_session(lease=timedelta(minutes=5)) as session:
            await run_job(job, session)
    pids = await pids_written(pid_file)
    assert still_running(pids) == []
    assert emulator.running() == []


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


async def test_deployment_job_past_its_timeout_is_cancelled(emulator: Emulator) -> None:
    """A deployment job that never starts (no worker) is cancelled when the job times out:
    its flow run ends Cancelled, not left Scheduled (or Cancelling, with nobody to finish
    it), and the session is stopped."""
    async with get_client() as prefect:
        flow_id = await prefect.create_flow(job_nobody_runs)
        await prefect.create_deployment(
            flow_id=flow_id, name="no-worker", entrypoint="tests/flows/test_jobs.py:job_nobody_runs"
        )
    with pytest.raises(JobTimeoutError):
        await render_batch(
            # 6 s: at 1.2 s the job's run_deployment had not created the flow run yet on a
            # loaded machine once render_batch persists its result (failed twice at 1.2 s,
            # passed at 6 s); a job that never starts is cancelled at any timeout.
            job_deployment="arr-test-job-nobody-runs/no-worker",
            job_timeout_minutes=0.1,
        )
    async with get_client() as prefect:
        runs = await prefect.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["arr-test-job-nobody-runs"]))
        )
    assert len(runs) >= 1
    latest = max(runs, key=lambda r: r.created or 0)
    assert latest.state is not None
    assert latest.state.name == "Cancelled", latest.state
    assert emulator.running() == []
