"""The kill matrix for a plain ``def`` flow using ``with rendering_session``, end to end.

The same scenarios as ``test_teardown.py`` (cancel, SIGTERM, SIGKILL of the flow run,
SIGKILL of the worker, the job failing, the flow timing out), on the same stack, for a
user's own ``def`` flow deployed from its own project (its code in the project's
directory, arr_prefect from the installed wheel). Its body blocks the main thread
(``time.sleep`` in a loop) while the session's lease keeper, worker watchdog and guard run
on the package's event-loop thread. Each scenario names the one layer that must stop the
session, as for render-batch: a layer the sync door loses fails its scenario.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient

from tests.e2e._stack import TIME_SCALE, Stack, _resolve
from tests.e2e.conftest import NOT_MEASURED, ScenarioResult, record
from tests.e2e.test_teardown import (
    FLOW_TIMEOUT_SECONDS,
    GUARD_STOP_WITHIN,
    OVERRUN_TOLERANCE,
    Scenario,
    Scene,
    check_stop_event,
    observe,
)

pytestmark = pytest.mark.e2e

SYNC_FLOW = '''
"""A user's def pipeline: one session, a renderer that blocks until told to fail."""

import os
import time
from datetime import timedelta
from pathlib import Path

from prefect import flow

from arr_prefect.flows import rendering_session, stop_owned_sessions

TIMEOUT = float(os.environ.get("SYNC_RENDER_TIMEOUT_SECONDS", "0")) or None


@flow(
    on_cancellation=[stop_owned_sessions],
    on_crashed=[stop_owned_sessions],
    timeout_seconds=TIMEOUT,
)
def sync_render(lease_minutes: float, trigger_file: str) -> None:
    with rendering_session(lease=timedelta(minutes=lease_minutes)) as session:
        print(f"rendering on {session.hostname}")
        while not Path(trigger_file).exists():
            time.sleep(0.05)
        raise RuntimeError("renderer crashed")
'''

SCENARIOS = [
    pytest.param(
        Scenario("(sync a) cancel via API", "cancel", "finally", ("Cancelled",)),
        id="a-cancel-via-api",
    ),
    pytest.param(
        Scenario("(sync b) SIGTERM flow run", "sigterm", "finally", ("Crashed",)),
        id="b-sigterm-flow-run",
    ),
    pytest.param(
        Scenario("(sync c) SIGKILL flow run", "sigkill", "guard", ("Crashed",), GUARD_STOP_WITHIN),
        id="c-sigkill-flow-run",
    ),
    pytest.param(
        Scenario("(sync e) job fails", "job-fails", "finally", ("Failed",)), id="e-job-fails"
    ),
    pytest.param(
        Scenario("(sync f) flow timeout", "timeout", "finally", ("TimedOut",)),
        id="f-flow-timeout",
    ),
    # Last: it kills the worker. The orphaned run's watchdog (on the loop thread) sees the
    # worker gone; the blocking body is interrupted with WorkerLostError and finally stops.
    pytest.param(
        Scenario("(sync d) SIGKILL worker", "kill-worker", "finally", ("Failed",)),
        id="d-sigkill-worker",
    ),
]


@pytest.fixture(scope="module")
def sync_project(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's project, deployed once with its own prefect.yaml to the stack's pool."""
    root = tmp_path_factory.mktemp("sync-pipelines")
    (root / "flows").mkdir()
    (root / "flows" / "__init__.py").write_text("")
    (root / "flows" / "sync_render.py").write_text(SYNC_FLOW.lstrip())
    (root / "prefect.yaml").write_text(
        textwrap.dedent(
            f"""
            name: sync-pipelines
            prefect-version: 3.9.1
            pull:
              - prefect.deployments.steps.set_working_directory:
                  directory: {root}
            deployments:
              - name: sync-render
                entrypoint: flows/sync_render.py:sync_render
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
    return root


class SyncScene(Scene):
    """A scene whose run is the def flow's deployment, not render-batch."""

    async def start(self) -> None:
        deployment = await self.prefect.read_deployment_by_name("sync-render/sync-render")
        env = dict(self.scenario.env)
        if self.scenario.trigger == "timeout":
            env["SYNC_RENDER_TIMEOUT_SECONDS"] = f"{FLOW_TIMEOUT_SECONDS:g}"
        parameters: dict[str, Any] = {
            "lease_minutes": self.scenario.lease_minutes,
            "trigger_file": str(self.trigger_file),
        }
        run = await self.prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters=parameters,
            job_variables={"env": env} if env else None,
            tags=["e2e", "sync", self.scenario.trigger],
        )
        self.run_id = run.id


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_def_flow_session_is_stopped_within_one_lease(
    live_worker: Stack, sync_project: Path, scenario: Scenario
) -> None:
    """Whatever ends the def flow's run, its session ends, billed at most one rolling lease
    past it, stopped by the layer that must."""
    stack = live_worker
    started = time.monotonic()
    async with PrefectClient(stack.api_url) as prefect:
        scene = SyncScene(stack, prefect, scenario)
        try:
            seen = await observe(scene)
        except BaseException as exc:
            record(
                ScenarioResult(
                    scenario.name,
                    f"FAILED: {type(exc).__name__}",
                    *NOT_MEASURED,
                    expected=scenario.stopped_by,
                    lease_minutes=scenario.lease_minutes,
                )
            )
            raise
    seconds_to_stop = max(0.0, seen.overrun / TIME_SCALE)
    record(
        ScenarioResult(
            scenario.name,
            seen.who,
            seconds_to_stop,
            seen.overrun,
            seen.state,
            expected=scenario.stopped_by,
            lease_minutes=scenario.lease_minutes,
        )
    )
    context = (
        f"{scenario.name}: stopped by {seen.who}, run {seen.state}, entry {seen.entry}"
        f" ({time.monotonic() - started:.0f} s)"
    )
    assert seen.who == scenario.stopped_by, context
    assert seen.entry["end_reason"] == "stopped", context
    if seen.event is not None and seen.event.event == "arr.session.stopped":
        check_stop_event(seen.event, seen.entry["id"])
    assert seconds_to_stop <= scenario.within, context
    assert seen.overrun <= scenario.lease_minutes * 60 + OVERRUN_TOLERANCE, context
    assert seen.state in scenario.final_states, context
    ledger = stack.ledger()
    assert ledger["running"] == 0, f"sessions left running: {ledger}"
