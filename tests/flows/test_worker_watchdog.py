"""rendering_session in a flow run started by a worker that then dies: the orphaned run
stops its job and its session instead of renewing the lease until the job ends."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest

from arr_prefect.emulator import Emulator
from arr_prefect.flows import rendering_session, worker_watchdog
from arr_prefect.flows.session import WorkerLostError

pytestmark = pytest.mark.usefixtures("arr")


@pytest.mark.realtime_job
async def test_lost_worker_stops_the_job_and_the_session(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the worker that started the run is gone, the body ends with WorkerLostError."""
    monkeypatch.setattr(worker_watchdog, "WORKER_PID", os.getppid() + 1)  # not our parent
    monkeypatch.setattr(worker_watchdog, "WORKER_CHECK_SECONDS", 0.01)
    # Keep pytest's own output: an orphan points its stdout/stderr pipes at /dev/null.
    silenced: list[bool] = []
    monkeypatch.setattr(worker_watchdog, "_silence_orphaned_output", lambda: silenced.append(True))
    with pytest.raises(WorkerLostError, match="nobody can cancel this run"):
        async with rendering_session(lease=timedelta(minutes=4)):
            await asyncio.sleep(30)
    [entry] = emulator.ledger()["sessions"]
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped")
    assert silenced == [True]


@pytest.mark.realtime_job
async def test_live_worker_leaves_the_job_alone(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the worker that started the run lives, the watchdog checks and does nothing."""
    monkeypatch.setattr(worker_watchdog, "WORKER_PID", os.getppid())
    monkeypatch.setattr(worker_watchdog, "WORKER_CHECK_SECONDS", 0)
    checks = 0
    checked_enough = asyncio.Event()

    def parent_pid() -> int:
        nonlocal checks
        checks += 1
        if checks == 20:
            checked_enough.set()
        return os.getppid()

    monkeypatch.setattr(worker_watchdog, "_parent_pid", parent_pid)
    async with rendering_session(lease=timedelta(minutes=4)) as session:
        await checked_enough.wait()  # 20 checks of a live worker, no real time
        assert session.status == "Ready"
    [entry] = emulator.ledger()["sessions"]
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped")


@pytest.mark.realtime_job
async def test_watchdog_can_be_turned_off(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stop_on_worker_loss off, a run whose worker is gone carries on to the end."""
    from arr_prefect.auth import TokenCache
    from arr_prefect.client import ArrClient
    from tests.flows.conftest import make_settings

    monkeypatch.setattr(worker_watchdog, "WORKER_PID", os.getppid() + 1)  # "gone"
    monkeypatch.setattr(worker_watchdog, "WORKER_CHECK_SECONDS", 0.01)
    client = ArrClient(
        make_settings("v1", stop_on_worker_loss=False),
        transport=emulator.transport(),
        clock=emulator.clock,
        token_cache=TokenCache(),
    )
    async with client, rendering_session(lease=timedelta(minutes=4), client=client):
        watchdogs = [t for t in asyncio.all_tasks() if t.get_name().startswith("worker-watchdog")]
        assert watchdogs == []  # nothing watches the (gone) worker: the body runs on
    [entry] = emulator.ledger()["sessions"]
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped")


@pytest.mark.parametrize(
    ("flow_run_id", "expected"),
    [
        pytest.param(None, None, id="not-started-by-a-worker"),
        pytest.param(
            "6f1c1c8e-2b0e-4f55-9d4c-0c7f3f1f0a11",
            os.getppid() if os.getppid() > 1 else None,  # PID 1's children have no worker
            id="started-by-a-worker",
        ),
    ],
)
def test_worker_pid_only_when_started_by_a_worker(
    monkeypatch: pytest.MonkeyPatch, flow_run_id: str | None, expected: int | None
) -> None:
    """Only a process a worker started for a flow run (PREFECT__FLOW_RUN_ID) is watched."""
    if flow_run_id is None:
        monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    else:
        monkeypatch.setenv("PREFECT__FLOW_RUN_ID", flow_run_id)
    assert worker_watchdog.starting_worker_pid() == expected
