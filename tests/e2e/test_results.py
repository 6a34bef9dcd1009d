"""Callers of the render-batch deployment get its RenderSummary, and cancel it with them.

On the real stack: ``run_deployment`` callers read the summary with ``state.result()``
(persisted, JSON, no secret in it); ``run_render_batch`` returns it, and cancels the run
when its caller times out or is cancelled, so the run's session is stopped.

Results go where the run's ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` says, as the README
tells a team whose callers run elsewhere: here a local-file-system block named in the
runs' environment (job variables); the worker's runs write there, and this process reads
there through the block the result's metadata names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import arun_deployment
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from arr_prefect.emulator import DEFAULT_ACCOUNT_KEY
from arr_prefect.flows import (
    RenderBatchTimeoutError,
    RenderSummary,
    run_render_batch,
)
from arr_prefect.flows.deployment_runs import CANCELLED_BY_CALLER
from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._stack import (
    LEASE_MINUTES,
    REPO_ROOT,
    Stack,
    StackError,
    _resolve,
    session_entry,
    tail,
)

pytestmark = pytest.mark.e2e

SHORT_JOB = {"frames": 2, "seconds_per_frame": 60.0}
"""2 emulated minutes of sample frames: 6 real seconds."""
LONG_JOB = {"frames": 1000, "seconds_per_frame": 60.0}
"""1000 emulated minutes: far longer than any test."""
RUN_TIMEOUT = 180.0
"""Real seconds for a short render-batch run on the loaded machine."""


RESULTS = {"env": {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "local-file-system/arr-results"}}
"""Job variables: the runs persist their results to the saved block ``arr-results``."""


@pytest.fixture(scope="module")
def results_block(stack: Stack) -> Path:
    """The local-file-system block ``arr-results``, saved on the stack's server."""
    basepath = stack.workdir / "results"
    basepath.mkdir(exist_ok=True)
    with on_stack(stack):
        LocalFileSystem(basepath=str(basepath)).save("arr-results", overwrite=True)
    return basepath


@contextlib.contextmanager
def on_stack(stack: Stack) -> Iterator[None]:
    """Prefect calls of this process (get_client, run_deployment) go to the stack."""
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        yield


@pytest.fixture
async def prefect(stack: Stack, results_block: Path) -> AsyncIterator[PrefectClient]:
    async with PrefectClient(stack.api_url) as client:
        yield client


def batch_parameters(job: dict[str, Any]) -> dict[str, Any]:
    return {"lease_minutes": LEASE_MINUTES, "job_parameters": job, "ready_timeout_minutes": 10}


def owned_sessions(run: FlowRun) -> list[str]:
    return [t.removeprefix(OWNER_TAG_PREFIX) for t in run.tags if t.startswith(OWNER_TAG_PREFIX)]


async def wait_final(prefect: PrefectClient, run_id: UUID, what: str, timeout: float) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = await prefect.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}: {run.state}")
        await asyncio.sleep(0.25)


def stored_records(basepath: Path) -> dict[Path, str]:
    """Every result record under ``basepath``, as text."""
    return {p: p.read_text() for p in basepath.rglob("*") if p.is_file()}


def assert_sessions_stopped(stack: Stack, session_ids: list[str]) -> None:
    ledger = stack.ledger()
    for session_id in session_ids:
        entry = session_entry(ledger, session_id)
        assert entry is not None, (session_id, ledger)
        assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped"), entry
    assert ledger["running"] == 0, ledger


async def test_run_deployment_callers_read_the_summary(
    live_worker: Stack, prefect: PrefectClient, results_block: Path
) -> None:
    """run_deployment's state.result() is the run's RenderSummary, persisted as JSON with
    no secret in it; run_render_batch returns the same."""
    with on_stack(live_worker):
        run = await arun_deployment(
            "render-batch/render-batch",
            parameters=batch_parameters(SHORT_JOB),
            timeout=RUN_TIMEOUT,
            poll_interval=0.5,
            as_subflow=False,
            job_variables=RESULTS,
        )
    assert run.state is not None
    assert run.state.is_completed(), f"{run.state}\n{tail(live_worker.processes['worker'].log)}"
    with on_stack(live_worker):
        summary = await run.state.aresult()
    assert isinstance(summary, RenderSummary), summary
    assert summary.job_outcome == "succeeded"
    assert [summary.session_id] == owned_sessions(await prefect.read_flow_run(run.id))
    assert summary.stopped_by == "finally"

    # What was stored: the summary as JSON (no pickle), no account key in it.
    records = stored_records(results_block)
    assert records, f"nothing persisted under {results_block}"
    for record, text in records.items():
        assert DEFAULT_ACCOUNT_KEY not in text, record
        stored = json.loads(text)
        assert stored["__class__"] == "arr_prefect.flows.render_batch.RenderSummary", record
    assert summary.model_dump(mode="json") in [json.loads(t)["data"] for t in records.values()]

    with on_stack(live_worker):
        returned = await run_render_batch(
            batch_parameters(SHORT_JOB), poll_interval=0.5, job_variables=RESULTS
        )
    assert isinstance(returned, RenderSummary)
    assert returned.job_outcome == "succeeded"
    assert returned.session_id not in (None, summary.session_id)
    assert_sessions_stopped(live_worker, [summary.session_id or "", returned.session_id or ""])


async def test_run_render_batch_cancels_its_run_on_timeout(
    live_worker: Stack, prefect: PrefectClient
) -> None:
    """When run_render_batch's own timeout passes, the run is cancelled and its session
    stopped; the caller gets RenderBatchTimeoutError."""
    timeout = 25.0
    started = time.monotonic()
    with on_stack(live_worker), pytest.raises(RenderBatchTimeoutError) as caught:
        await run_render_batch(batch_parameters(LONG_JOB), timeout=timeout, poll_interval=0.5)
    assert time.monotonic() - started < timeout + 10
    run = await wait_final(prefect, caught.value.flow_run_id, "the timed-out run to end", 60)
    assert run.state is not None
    assert run.state.name == "Cancelled", run.state
    sessions = owned_sessions(run)
    if sessions:  # the run got as far as a session (not a given on a loaded machine)
        assert_sessions_stopped(live_worker, sessions)
    assert live_worker.ledger()["running"] == 0


def readme_caller_flow() -> str:
    """The docs' run_render_batch example (its ``my_pipeline`` flow), as written."""
    readme = (REPO_ROOT / "docs" / "deployments.md").read_text()
    section = readme.split("## Results for callers", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def deploy_caller_project(stack: Stack, root: Path) -> None:
    """A project of its own (flows/ and tasks/ packages) whose ``caller`` flow calls
    run_render_batch, deployed with its own prefect.yaml to the stack's pool: its runs
    take their code from the project's directory, arr_prefect from the installed wheel."""
    (root / "flows").mkdir(parents=True)
    (root / "tasks").mkdir()
    (root / "flows" / "__init__.py").write_text("")
    (root / "tasks" / "__init__.py").write_text("")
    (root / "flows" / "caller.py").write_text(readme_caller_flow())
    (root / "prefect.yaml").write_text(
        textwrap.dedent(
            f"""
            name: my-pipelines
            prefect-version: 3.9.1
            pull:
              - prefect.deployments.steps.set_working_directory:
                  directory: {root}
            deployments:
              - name: caller
                entrypoint: flows/caller.py:my_pipeline
                work_pool:
                  name: arr-process
            """
        ).lstrip()
    )
    env = stack.user_env
    argv = ["prefect", "--no-prompt", "deploy", "--all"]
    done = subprocess.run(
        _resolve(argv, env), cwd=root, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param("cancel", id="caller-cancelled"),
        pytest.param("sigterm", id="caller-crashed"),
    ],
)
async def test_ending_the_caller_cancels_its_render_batch_run(
    live_worker: Stack, prefect: PrefectClient, tmp_path: Path, ending: str
) -> None:
    """Cancel (as the UI does) or SIGTERM (it ends Crashed) a deployed flow that calls
    run_render_batch (the README's example): run_render_batch cancels the render-batch run
    at once, which ends Cancelled with its session stopped.

    Prefect 3.9's server also cancels a subflow whose parent ended Cancelled (its
    cancellation-cleanup service, every 20 s), never one whose parent Crashed: the
    child's Cancelling state must carry run_render_batch's message."""
    deploy_caller_project(live_worker, tmp_path / "my-pipelines")
    deployment = await prefect.read_deployment_by_name("my-pipeline/caller")
    parent = await prefect.create_flow_run_from_deployment(
        deployment.id,
        parameters={"render": {**batch_parameters(LONG_JOB), "job_timeout_minutes": 1440}},
        tags=["e2e", "caller", ending],
    )

    async def child_in_progress() -> tuple[FlowRun, str] | None:
        runs = await prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
            ),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["render-batch"])),
        )
        for run in runs:
            sessions = owned_sessions(run)
            if sessions:
                entry = session_entry(live_worker.ledger(), sessions[0])
                if entry and entry["status"] == "Ready" and entry["extend_count"] >= 1:
                    return run, sessions[0]
        state = (await prefect.read_flow_run(parent.id)).state
        if state is not None and state.is_final():
            raise StackError(f"the caller ended before its batch was in progress: {state}")
        return None

    deadline = time.monotonic() + 120
    while (found := await child_in_progress()) is None:
        if time.monotonic() > deadline:
            raise StackError(
                "timed out waiting for the caller's render-batch run to be in progress;"
                f" worker log:\n{tail(live_worker.processes['worker'].log)}"
            )
        await asyncio.sleep(0.25)
    child, session_id = found

    if ending == "cancel":
        await prefect.set_flow_run_state(parent.id, Cancelling(), force=True)
    else:
        caller = await prefect.read_flow_run(parent.id)
        pid = int(str(caller.infrastructure_pid).rsplit(":", 1)[-1])
        live_worker.flow_run_pids.add(pid)
        os.kill(pid, signal.SIGTERM)

    parent_run = await wait_final(prefect, parent.id, "the caller to end", 90)
    child_run = await wait_final(prefect, child.id, "the render-batch run to end", 90)
    assert parent_run.state is not None
    assert child_run.state is not None
    expected = "Cancelled" if ending == "cancel" else "Crashed"
    assert parent_run.state.name == expected, parent_run.state
    assert child_run.state.name == "Cancelled", child_run.state
    history = await prefect.read_flow_run_states(child.id)
    cancelling = [s.message for s in history if s.type == StateType.CANCELLING]
    assert any(m and m.startswith(CANCELLED_BY_CALLER) for m in cancelling), cancelling
    assert_sessions_stopped(live_worker, [session_id])
