"""Installed as a user installs it: the wheel, non-editable, into a project of its own.

The stack's wheel-only venv (the same one its worker runs in) holds the built wheel and
its dependencies, nothing else. A temporary project outside the checkout, with its own
``flows`` and ``tasks`` packages (the usual Prefect layout), composes our tasks,
``rendering_session`` and ``render_batch`` with its own, against the stack's Prefect
server and emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._stack import TIME_SCALE, Stack, StackError, session_entry, tail
from tests.e2e._wheel import top_level_names

pytestmark = pytest.mark.e2e

PROJECT_TIMEOUT = 240.0
"""Real seconds for the project's pipeline: three sessions and a 2-frame batch (~20 s)."""

USER_TASKS = '''
from prefect import task


@task
def prepare_scene(name: str) -> str:
    """The project's own task, in the project's own `tasks` package."""
    return f"scene:{name}"
'''

USER_FLOWS_HELPERS = '''
def describe(session_id: str) -> str:
    """A helper of the project's own `flows` package."""
    return f"rendered on {session_id}"
'''

USER_PIPELINE = '''
"""The project's pipeline: its own flows/ and tasks/ next to arr_prefect's."""

import asyncio
import json
import sys
from datetime import timedelta

from prefect import flow

import flows
import tasks
from arr_prefect.flows import RenderSummary, render_batch, rendering_session
from arr_prefect.tasks import create_session, get_session, stop_session, wait_until_ready
from flows.helpers import describe
from tasks.prepare import prepare_scene


@flow
async def my_pipeline() -> dict[str, object]:
    scene = prepare_scene("a.glb")
    # Our tasks, composed by hand.
    session = await create_session(lease=timedelta(minutes=5), size="standard")
    try:
        session = await wait_until_ready(session.id)
        by_hand = session.id
    finally:
        await stop_session(session.id)
    by_hand_status = (await get_session(by_hand)).status.value
    # rendering_session.
    async with rendering_session("standard", lease=timedelta(minutes=2)) as session:
        in_context = session.id
        note = describe(session.id)
    # render_batch as a subflow, with the sample job.
    summary = await render_batch(
        job_parameters={"frames": 2, "seconds_per_frame": 60.0}, lease_minutes=2
    )
    assert isinstance(summary, RenderSummary)
    return {
        "scene": scene,
        "note": note,
        "sessions": [by_hand, in_context, summary.session_id],
        "by_hand_status": by_hand_status,
        "batch": summary.job_outcome,
        "modules": {
            "flows": flows.__file__,
            "tasks": tasks.__file__,
            "arr_prefect.flows": sys.modules["arr_prefect.flows"].__file__,
        },
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(my_pipeline())))
'''


def write_project(root: Path) -> Path:
    """A Prefect project with its own ``flows`` and ``tasks`` packages."""
    files = {
        "flows/__init__.py": '"""The project\'s flows."""\n',
        "flows/helpers.py": USER_FLOWS_HELPERS,
        "flows/pipeline.py": USER_PIPELINE,
        "tasks/__init__.py": '"""The project\'s tasks."""\n',
        "tasks/prepare.py": USER_TASKS,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def test_wheel_installs_exactly_one_top_level_package(stack: Stack) -> None:
    """The wheel holds one top-level package, arr_prefect, and says so in top_level.txt."""
    venv = stack.ensure_venv()
    assert top_level_names(venv.wheel) == {"arr_prefect"}
    with zipfile.ZipFile(venv.wheel) as archive:
        [top_level] = [n for n in archive.namelist() if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["arr_prefect"]
        names = archive.namelist()
    # The symlinked folders' code is in the wheel as files under arr_prefect.
    assert "arr_prefect/flows/render_batch.py" in names
    assert "arr_prefect/tasks/sessions.py" in names


def test_venv_holds_the_wheel_not_the_checkout(stack: Stack, tmp_path: Path) -> None:
    """In the worker's venv, arr_prefect is the installed wheel (not editable, not the
    checkout) and arr-emulator is installed with it."""
    venv = stack.ensure_venv()
    probe = (
        "import json, arr_prefect, importlib.metadata as m;"
        "d = m.distribution('arr-prefect');"
        "print(json.dumps({'file': arr_prefect.__file__,"
        " 'direct_url': json.loads(d.read_text('direct_url.json') or '{}')}))"
    )
    done = subprocess.run(
        [str(venv.python), "-c", probe],
        cwd=tmp_path,
        env=venv.env(stack.prefect_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert Path(seen["file"]).is_relative_to(venv.root), seen
    assert "dir_info" not in seen["direct_url"], seen  # dir_info: an (editable) directory
    assert seen["direct_url"]["url"].endswith(".whl"), seen
    assert (venv.bin_dir / "arr-emulator").exists()


def test_project_with_own_flows_and_tasks_composes_ours(stack: Stack, tmp_path: Path) -> None:
    """A project with its own flows/ and tasks/ uses our tasks, rendering_session and
    render_batch next to its own, with no clash; every session it made is stopped."""
    project = write_project(tmp_path / "my-project")
    env = stack.worker_env  # the wheel-only venv, the stack's server, the emulator
    done = subprocess.run(
        [str(stack.ensure_venv().python), "-m", "flows.pipeline"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROJECT_TIMEOUT,
        check=False,
    )
    context = (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    )
    assert done.returncode == 0, context
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["scene"] == "scene:a.glb"
    assert result["batch"] == "succeeded", result
    assert result["by_hand_status"] in ("Stopping", "Stopped"), result  # v1 has Stopping
    modules = result["modules"]
    assert Path(modules["flows"]).is_relative_to(project), modules
    assert Path(modules["tasks"]).is_relative_to(project), modules
    assert Path(modules["arr_prefect.flows"]).is_relative_to(stack.ensure_venv().root), modules
    ledger = stack.ledger()
    for session_id in result["sessions"]:
        entry = session_entry(ledger, session_id)
        assert entry is not None, (session_id, ledger)
        assert entry["status"] == "Stopped", entry
    assert ledger["running"] == 0, ledger


HOOK_LEASE_MINUTES = 20.0
"""A rolling lease of 60 real seconds: only the crash hook can stop the session sooner
(the reaper's trigger waits a minute and a minute of grace)."""


async def test_crash_hook_finds_the_installed_code(live_worker: Stack) -> None:
    """SIGKILL a render-batch run on the wheel-only worker: the on_crashed hook, which
    Prefect runs in a new process from the worker's empty directory, loads our flow from
    the installed package and stops the session, long before its lease would end it."""
    stack = live_worker
    async with PrefectClient(stack.api_url) as prefect:
        deployment = await prefect.read_deployment_by_name("render-batch/render-batch")
        run = await prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "lease_minutes": HOOK_LEASE_MINUTES,
                "job_parameters": {"frames": 1000, "seconds_per_frame": 60.0},
                "job_timeout_minutes": 24 * 60,
            },
            # The session guard would stop it within a second of the SIGKILL: off, so only
            # the hook can (as in the kill matrix's row (g)).
            job_variables={"env": {"ARR_STOP_ON_PROCESS_DEATH": "false"}},
            tags=["e2e", "crash-hook"],
        )
        deadline = time.monotonic() + 120
        while True:
            current = await prefect.read_flow_run(run.id)
            if current.state is not None and current.state.is_final():
                raise StackError(f"the run ended before its job was in progress: {current.state}")
            owned = [
                t.removeprefix(OWNER_TAG_PREFIX)
                for t in current.tags
                if t.startswith(OWNER_TAG_PREFIX)
            ]
            entry = session_entry(stack.ledger(), owned[0]) if owned else None
            if entry and entry["status"] == "Ready" and current.infrastructure_pid:
                break
            if time.monotonic() > deadline:
                raise StackError(
                    f"timed out waiting for the job; worker log:\n{tail(stack.processes['worker'].log)}"
                )
            await asyncio.sleep(0.25)
        session_id = owned[0]
        pid = int(str(current.infrastructure_pid).rsplit(":", 1)[-1])
        stack.flow_run_pids.add(pid)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        while (entry := session_entry(stack.ledger(), session_id)) and entry["status"] in (
            "Starting",
            "Ready",
        ):
            if time.monotonic() - killed > HOOK_LEASE_MINUTES * 60 / TIME_SCALE:
                raise StackError(f"session {session_id} outlived the hook's chance: {entry}")
            await asyncio.sleep(0.25)
        assert entry is not None
        assert entry["end_reason"] == "stopped", entry

        # Who stopped it: the hook's arr.session.stopped event (events become readable
        # about a second after they are emitted).
        stopped_by: set[str] = set()
        deadline = time.monotonic() + 30
        while not stopped_by and time.monotonic() < deadline:
            page = await prefect.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["arr.session.stopped"]),
                    resource=EventResourceFilter(id=[f"arr.session.{session_id}"]),
                ),
                limit=10,
            )
            stopped_by = {str(event.payload.get("stopped_by")) for event in page.events}
            await asyncio.sleep(0.5)
        assert stopped_by == {"hook:Crashed"}, (stopped_by, tail(stack.processes["worker"].log))
    assert stack.ledger()["running"] == 0


@pytest.mark.parametrize(
    ("deployment", "parameters"),
    [
        pytest.param(
            "render-batch/render-batch-nightly",
            {"lease_minutes": 2, "job_parameters": {"frames": 2, "seconds_per_frame": 60.0}},
            id="render-batch-nightly",
        ),
        pytest.param(
            "reap-orphaned-sessions/reap-orphaned-sessions",
            {"grace_minutes": 0, "dry_run": True},
            id="reap-orphaned-sessions",
        ),
    ],
)
async def test_deployment_runs_on_the_wheel_only_worker(
    live_worker: Stack, deployment: str, parameters: dict[str, object]
) -> None:
    """The scheduled batch and the reaper run to Completed on the worker that has only the
    wheel (render-batch itself: every other e2e test)."""
    stack = live_worker
    async with PrefectClient(stack.api_url) as prefect:
        found = await prefect.read_deployment_by_name(deployment)
        run = await prefect.create_flow_run_from_deployment(
            found.id, parameters=parameters, tags=["e2e", "wheel-only"]
        )
        deadline = time.monotonic() + 180
        while (current := await prefect.read_flow_run(run.id)).state is None or not (
            current.state.is_final()
        ):
            if time.monotonic() > deadline:
                raise StackError(f"{deployment} run did not end: {current.state}")
            await asyncio.sleep(0.25)
    assert current.state is not None
    assert current.state.name == "Completed", (current.state, tail(stack.processes["worker"].log))
    assert stack.ledger()["running"] == 0
