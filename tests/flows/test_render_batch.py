"""render_batch and rendering_session: each path ends with no session left running."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import flow, get_client
from prefect._internal.concurrency.cancellation import AsyncCancelScope, cancel_async_after
from prefect.client.schemas.objects import State
from prefect.exceptions import ParameterTypeError
from prefect.utilities import timeout as prefect_timeout

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient, use_client_factory
from arr_prefect.clock import VirtualClock, default_clock, use_clock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, Emulator
from arr_prefect.errors import (
    ReadyTimeoutError,
    SessionFailedError,
)
from arr_prefect.flows import (
    InvalidJobError,
    JobFailedError,
    JobTimeoutError,
    RenderSummary,
    SessionReport,
    hooks,
    owner_tags,
    render_batch,
    rendering_session,
    stop_owned_sessions,
)
from arr_prefect.flows.sample_job import SampleJobError
from tests.flows import sample_jobs
from tests.flows.conftest import make_settings

pytestmark = pytest.mark.usefixtures("arr")

CREATE_ROUTE = {"v1": "v1.create", "2021-01-01": "v2021.create"}


def only_session(emulator: Emulator) -> dict[str, Any]:
    sessions: list[dict[str, Any]] = emulator.ledger()["sessions"]
    assert len(sessions) == 1, sessions
    return sessions[0]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else None


async def pid_written(path: Path) -> int:
    """The PID a command job wrote to ``path``, once written (it starts in milliseconds)."""
    for _ in range(3000):  # 30 s at most: bounds a failure only
        if (pid := read_pid(path)) is not None:
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError(f"the job never wrote its PID to {path}")


def flow_run_id(state: State[Any]) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


async def test_success_renders_and_stops(emulator: Emulator, api_version: str) -> None:
    """The sample job runs on a Ready session, which is then stopped and summarised."""
    state = await render_batch(
        job_parameters={"frames": 4, "seconds_per_frame": 30}, return_state=True
    )
    summary = await state.aresult()
    assert isinstance(summary, RenderSummary)
    entry = only_session(emulator)
    assert summary.session_id == entry["id"]
    assert summary.job_outcome == "succeeded"
    assert summary.api_version == api_version
    assert summary.session_final_status == "Stopped"
    assert summary.stopped_by == "finally"
    assert summary.time_to_ready_seconds is not None
    assert 60 <= summary.time_to_ready_seconds <= 70
    assert entry["status"] == "Stopped"
    assert entry["end_reason"] == "stopped"
    # create 60 s start-up + 2 min of frames: billed about 3 minutes.
    assert summary.billed_minutes == 3
    assert 170 <= entry["billed_seconds"] <= 190
    async with get_client() as prefect:
        run = await prefect.read_flow_run(flow_run_id(state))
    assert f"arr-session:{entry['id']}" in run.tags


async def test_summary_artifact_is_published(emulator: Emulator) -> None:
    """The summary shows as a markdown artifact of the run."""
    state = await render_batch(
        job_parameters={"frames": 1, "seconds_per_frame": 1}, return_state=True
    )
    summary = await state.aresult()
    async with get_client() as prefect:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id(state)])
            )
        )
    # Keyed artifacts only: the persisted result adds Prefect's own (unkeyed) one.
    by_key = {a.key: a for a in artifacts if a.key}
    assert set(by_key) == {"render-batch-summary", "session-ready-wait", "render-job-progress"}
    assert summary.session_id is not None
    assert summary.session_id in str(by_key["render-batch-summary"].data)


async def test_job_failure_stops_session_and_propagates(emulator: Emulator) -> None:
    """A failing job fails the run with its own error, and the session is stopped."""
    with pytest.raises(SampleJobError, match="frame 2"):
        await render_batch(
            job_parameters={"frames": 5, "seconds_per_frame": 10, "fail_at_frame": 2}
        )
    assert only_session(emulator)["status"] == "Stopped"


async def test_ready_timeout_stops_session(emulator: Emulator) -> None:
    """A session not Ready by the deadline is stopped and the run fails with ReadyTimeoutError."""
    emulator.state.startup_seconds = 3600
    with pytest.raises(ReadyTimeoutError, match="not Ready after 300s"):
        await render_batch(ready_timeout_minutes=5)
    entry = only_session(emulator)
    assert entry["status"] == "Stopped"
    assert entry["ready_at"] is None


async def test_session_ending_in_error_fails_with_service_message(
    emulator: Emulator, api_version: str
) -> None:
    """A session that ends in Error fails the run with the service's message."""
    emulator.faults.add("session_error", CREATE_ROUTE[api_version])
    with pytest.raises(SessionFailedError, match="ended in Error: The session failed to start"):
        await render_batch()
    assert only_session(emulator)["status"] == "Error"


async def test_job_outliving_many_lease_periods_is_renewed(emulator: Emulator) -> None:
    """A 60-minute job on a 10-minute rolling lease keeps its session: renewals, no expiry."""
    summary = await render_batch(
        job_parameters={"frames": 12, "seconds_per_frame": 300}, lease_minutes=10
    )
    entry = only_session(emulator)
    assert summary.job_outcome == "succeeded"
    assert entry["status"] == "Stopped"
    assert entry["end_reason"] == "stopped"
    assert summary.lease_renewals >= 10
    assert entry["extend_count"] >= 10
    # The lease never ran far ahead of the work: at most one rolling lease beyond an hour.
    assert entry["max_lease_seconds"] <= (60 + 10 + 1) * 60


@pytest.mark.realtime_job
async def test_command_job_gets_session_environment_not_the_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command job sees ARR_SESSION_* and never the account key; exit 0 is success."""
    monkeypatch.setenv("ARR_ACCOUNT_KEY", "must-not-reach-the-job")
    monkeypatch.setenv("arr_account_key", "must-not-reach-the-job-either")
    script = (
        "import os, sys; "
        "sys.exit(0 if os.environ.get('ARR_SESSION_ID') and os.environ.get('ARR_SESSION_HOSTNAME')"
        " and not [k for k in os.environ if k.upper().startswith('ARR_')"
        " and not k.startswith('ARR_SESSION_')] else 7)"
    )
    summary = await render_batch(job_command=[sys.executable, "-c", script])
    assert summary.job_outcome == "succeeded"
    assert only_session(emulator)["status"] == "Stopped"


@pytest.mark.realtime_job
async def test_command_job_exit_code_decides(emulator: Emulator) -> None:
    """A command exiting non-zero fails the run with its exit code; the session is stopped."""
    command = [sys.executable, "-m", "arr_prefect.flows.sample_job", "--frames", "2",
               "--seconds-per-frame", "0", "--fail-at-frame", "1"]  # fmt: skip
    with pytest.raises(JobFailedError, match="exited with code 3") as info:
        await render_batch(job_command=command)
    assert info.value.exit_code == 3
    assert only_session(emulator)["status"] == "Stopped"


@pytest.mark.realtime_job
async def test_command_job_timeout_kills_it(
    emulator: Emulator, clock: VirtualClock, tmp_path: Path
) -> None:
    """A command job past its timeout, counted on the run's clock, is ended and the run
    fails; the session is stopped. The test moves the clock: no real time waited."""
    pid_file = tmp_path / "pid"
    command = ["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 600']
    run = asyncio.create_task(render_batch(job_command=command, job_timeout_minutes=1))
    pid = await pid_written(pid_file)
    assert alive(pid)
    clock.advance(60)
    with pytest.raises(JobTimeoutError, match="within 60s"):
        await asyncio.wait_for(run, 10)  # bounds a failure only: it ends at once
    assert not alive(pid)
    assert only_session(emulator)["status"] == "Stopped"


class YieldingTransport(httpx.AsyncBaseTransport):
    """``inner``, suspending the caller once per request, as any network round trip does."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


FLOW_TIMEOUT = 1.0
"""The flow's ``timeout_seconds`` in the flow-timeout test (its deadline is the test's)."""


async def test_flow_timeout_stops_session(
    api_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow's own timeout cancels the job, teardown still stops the session, and the
    summary says the flow's timeout ended the run.

    Prefect's timeout is a cancel scope around the flow, with a real-time deadline armed
    when the flow starts. A 3 s deadline raced the run's set-up, and lost it on a loaded
    machine: it fired before the create was sent, and there was no session at all. Here
    the engine's scope for this flow is armed without a deadline and recorded, and the
    test expires it (``cancel()``: what the deadline does when it passes) once the job
    runs on the Ready session. The flow's ``timeout_seconds`` stays 1 s, so the engine
    reports "exceeded timeout of 1.0 second(s)" and render-batch's summary the flow's
    timeout (its check that the time is up allows 1 s of slack, so it holds here).

    Every request yields to the event loop once, as a network round trip does (the
    in-process transport may answer without ever suspending): an unshielded stop would
    then be cancelled by the expired scope, which re-cancels at every await inside it.
    """
    clock = VirtualClock()  # no autojump: nothing moves but what the test moves
    emulator = Emulator(clock=clock, startup_seconds=0)
    settings = make_settings(api_version)
    cache = TokenCache()
    flow_timeouts: list[AsyncCancelScope] = []
    arm = cancel_async_after  # what prefect.utilities.timeout arms the flow's timeout with

    @contextlib.contextmanager
    def recording(timeout: float | None, name: str | None = None) -> Iterator[Any]:
        if timeout != FLOW_TIMEOUT:
            with arm(timeout=timeout, name=name) as scope:
                yield scope
            return
        with arm(timeout=None, name=name) as scope:  # the test is the deadline
            flow_timeouts.append(scope)
            yield scope

    monkeypatch.setattr(prefect_timeout, "cancel_async_after", recording)
    job_started = asyncio.Event()
    monkeypatch.setattr(sample_jobs, "on_start", lambda session: job_started.set())
    with (
        use_clock(clock),
        use_client_factory(
            lambda chosen=None: ArrClient(
                chosen or settings,
                transport=YieldingTransport(emulator.transport()),
                clock=clock,
                token_cache=cache,
            )
        ),
    ):

        async def timed_run() -> State[Any]:
            return await render_batch.with_options(timeout_seconds=FLOW_TIMEOUT)(
                job_callable="tests.flows.sample_jobs:block_forever", return_state=True
            )

        run = asyncio.create_task(timed_run())
        await asyncio.wait_for(job_started.wait(), 60)  # bounds a failure only
        assert only_session(emulator)["status"] == "Ready"
        [timeout] = flow_timeouts
        timeout.cancel()
        state = await asyncio.wait_for(run, 60)
    assert state.is_failed()
    assert f"exceeded timeout of {FLOW_TIMEOUT}" in (state.message or "")
    entry = only_session(emulator)
    assert entry["status"] == "Stopped"
    assert emulator.running() == []
    # The summary names the timeout, not the bare CancelledError the flow saw.
    async with get_client() as prefect:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id(state)])
            )
        )
    [summary] = [a for a in artifacts if a.key == "render-batch-summary"]
    assert "timed out (the flow's timeout of 1 s)" in str(summary.data)
    assert "CancelledError" not in str(summary.data)


async def test_parent_flow_failing_inside_rendering_session(emulator: Emulator) -> None:
    """A parent flow that composes rendering_session and fails inside it stops the session."""
    report = SessionReport()

    @flow
    async def parent() -> None:
        async with rendering_session("premium", lease=timedelta(minutes=5), report=report) as s:
            assert s.status == "Ready"
            raise RuntimeError("the parent's own step failed")

    with pytest.raises(RuntimeError, match="parent's own step"):
        await parent()
    entry = only_session(emulator)
    assert entry["status"] == "Stopped"
    assert entry["size"] == "Premium"
    assert report.stopped_by == "finally"
    assert report.final_status == "Stopped"


async def test_rendering_session_outside_a_flow(emulator: Emulator) -> None:
    """rendering_session also works without Prefect running a flow (plain asyncio)."""
    async with rendering_session(lease=timedelta(minutes=5)) as session:
        assert session.status == "Ready"
    assert only_session(emulator)["status"] == "Stopped"


async def test_lost_session_cancels_the_body(emulator: Emulator) -> None:
    """If the session is stopped elsewhere mid-job, the body ends with the specific error."""
    from arr_prefect.errors import SessionStoppedError

    async def job_whose_session_is_stopped_elsewhere() -> None:
        async with rendering_session(lease=timedelta(minutes=4)) as session:
            emulator.state.stop(DEFAULT_ACCOUNT_ID, session.id)  # someone else stops it
            await default_clock().sleep(3600)

    with pytest.raises(SessionStoppedError):
        await job_whose_session_is_stopped_elsewhere()
    assert only_session(emulator)["status"] == "Stopped"


async def test_hook_stops_sessions_found_from_tags(
    emulator: Emulator, api_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop_owned_sessions finds a run's sessions from its tags, as in another process,
    and says so in an arr.session.stopped event with the session's final status."""
    from arr_prefect.tasks import create_session

    @flow
    async def leaky() -> str:
        session = await create_session(lease=timedelta(minutes=5))
        await owner_tags.record_session_owner(session.id, api_version=api_version)
        return session.id

    state = await leaky(return_state=True)
    session_id = await state.aresult()
    assert [s.id for s in emulator.running()] == [session_id]
    owner_tags._owned.clear()  # what another process knows: only the tags
    async with get_client() as prefect:
        run = await prefect.read_flow_run(flow_run_id(state))
    emitted: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        hooks,
        "emit_session_event",
        lambda event, _sid, _run, payload: emitted.append((event, payload)),
    )
    await stop_owned_sessions(leaky, run, state)
    assert emulator.running() == []
    [(event, payload)] = emitted
    assert event == "arr.session.stopped"
    assert payload["stopped_by"] == f"hook:{state.name}"
    assert payload["final_status"] == "Stopped"
    assert payload["session_id"] == session_id


@pytest.mark.parametrize(
    ("parameters", "error", "match"),
    [
        pytest.param({"size": "huge"}, ParameterTypeError, "size", id="unknown-size"),
        pytest.param({"lease_minutes": 0}, ParameterTypeError, "greater than or equal to 1", id="lease-zero"),
        pytest.param({"lease_minutes": -60}, ParameterTypeError, "greater than or equal to 1", id="lease-negative"),
        pytest.param({"lease_minutes": 1441}, ParameterTypeError, "less than or equal to 1440", id="lease-over-24h"),
        pytest.param({"lease_minutes": 0.5}, ParameterTypeError, "greater than or equal to 1", id="lease-under-a-minute"),
        pytest.param({"lease_minutes": "abc"}, ParameterTypeError, "lease_minutes", id="lease-not-a-number"),
        pytest.param({"ready_timeout_minutes": 0}, ParameterTypeError, "greater than 0", id="ready-timeout-zero"),
        pytest.param({"job_timeout_minutes": -1}, ParameterTypeError, "greater than 0", id="job-timeout-negative"),
        pytest.param({"job_command": "echo hi"}, ParameterTypeError, "job_command", id="command-not-a-list"),
        pytest.param({"job_callable": "nowhere.at.all:job"}, InvalidJobError, "cannot import", id="callable-unknown-module"),
        pytest.param({"job_callable": "arr_prefect.flows.sample_job:nothing"}, InvalidJobError, "has no", id="callable-unknown-name"),
        pytest.param({"job_callable": "no-colon"}, InvalidJobError, "package.module:function", id="callable-malformed"),
        pytest.param({"job_command": ["definitely-not-a-command-xyz"]}, InvalidJobError, "not found on PATH", id="command-missing"),
        pytest.param({"job_deployment": "no-slash"}, InvalidJobError, "flow-name/deployment-name", id="deployment-malformed"),
        pytest.param({"job_deployment": "nope/nothing"}, InvalidJobError, "does not exist", id="deployment-unknown"),
        pytest.param({"job_callable": "arr_prefect.flows.sample_job:render_frames", "job_command": ["true"]}, InvalidJobError, "at most one", id="two-jobs"),
    ],
)  # fmt: skip
async def test_bad_input_fails_before_any_session(
    emulator: Emulator, parameters: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad parameters get a specific error and no session is ever created."""
    with pytest.raises(error, match=match):
        await render_batch(**parameters)
    assert emulator.ledger()["sessions"] == []


def test_job_environment_withholds_every_arr_setting() -> None:
    """A command job gets the session's details and none of our settings, in any case."""
    from arr_prefect.flows.jobs import job_environment
    from arr_prefect.models import Session

    session = Session(id="s-1", status="Ready", hostname="h.example", handshake_port=50000)
    base = {
        "PATH": "/bin",
        "ARR_ACCOUNT_KEY": "k1",
        "arr_account_key": "k2",
        "Arr_Account_Id": "id",
        "ARR_SERVICE_URL": "https://x",
    }
    assert job_environment(session, base) == {
        "PATH": "/bin",
        "ARR_SESSION_ID": "s-1",
        "ARR_SESSION_HOSTNAME": "h.example",
        "ARR_SESSION_HANDSHAKE_PORT": "50000",
    }


async def test_cancel_during_teardown_does_not_cut_the_stop_short(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain task.cancel() that lands while the stop is in flight waits for the stop."""
    import asyncio

    started, release = asyncio.Event(), asyncio.Event()
    original = ArrClient.stop_session

    async def slow_stop(self: ArrClient, session_id: str) -> bool:
        started.set()
        await release.wait()
        return await original(self, session_id)

    monkeypatch.setattr(ArrClient, "stop_session", slow_stop)

    async def failing_job() -> None:
        async with rendering_session(lease=timedelta(minutes=5)):
            raise RuntimeError("the job failed")

    task = asyncio.create_task(failing_job())
    await started.wait()
    task.cancel()  # e.g. Ctrl-C or a pipeline's TaskGroup, mid-teardown
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert only_session(emulator)["status"] == "Stopped"


def test_render_batch_registers_the_teardown_hooks() -> None:
    """Cancel and crash hooks stop the run's sessions from wherever Prefect runs them."""
    assert stop_owned_sessions in render_batch.on_cancellation_hooks
    assert stop_owned_sessions in render_batch.on_crashed_hooks
