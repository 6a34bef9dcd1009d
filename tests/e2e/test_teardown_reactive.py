"""The kill matrix's reactive rows: the reaper's trigger, not its hourly schedule, stops a
session whose every other layer is gone, within a bound.

Each row starts a render-batch deployment run (as tests/e2e/test_teardown.py does, with
its helpers), waits until its job is in progress, and 20 s later ends it so that only the
reaper can stop its session before a long lease would:

- (h) the flow-run process is SIGKILLed with the session guard off, and the crash hook's
  one stop attempt refused (503): the worker reports the run Crashed, the deployment's
  trigger fires although the run's ``arr-session`` tag was added at run time (its state
  events carry the tags cached before), and the reaper it schedules stops the session;
- (i) the host is lost: its worker, the flow-run process and its session guard are
  SIGKILLed at once, and nothing reports the run. Its heartbeats stop (every 30 s for this
  run), the zombie-run automation from automations/ (created the README's way, its window
  shortened to 60 s) marks it Crashed, and the trigger's reaper stops the session.

The stack's scheduler is off, so the reaper's hourly schedule never runs here: a reaper
run can only come from the trigger. Each row asserts ``arr.reaper.stopped`` said who
stopped it, and how long after the kill (real seconds).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # Prefect's dependency, no stubs
from prefect.client.orchestration import PrefectClient

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._fleet import session_guards_of, sigkill
from tests.e2e._stack import (
    REPO_ROOT,
    TIME_SCALE,
    Stack,
    StackError,
    parse_time,
    session_entry,
)
from tests.e2e.conftest import NOT_MEASURED, ScenarioResult, record
from tests.e2e.test_teardown import OVERRUN_TOLERANCE, Scenario, Scene, until

pytestmark = pytest.mark.e2e

AFTER_READY = 20.0
"""Real seconds between the job being in progress and the kill."""
HEARTBEAT_SECONDS = 30
"""PREFECT_FLOWS_HEARTBEAT_FREQUENCY of the lost host's run (Prefect's minimum)."""
ZOMBIE_WINDOW = 60
"""The zombie automation's ``within`` here: twice the run's heartbeat period."""
TRIGGER_WITHIN = 130.0
"""Real seconds from a Crashed run to its session stopped by the trigger's reaper: the
trigger schedules it 60 s later with 60 s of grace, then the worker starts the run in a
new process (5-20 s on a loaded 2-core machine) and the reaper stops the session."""
LOST_HOST_WITHIN = HEARTBEAT_SECONDS + ZOMBIE_WINDOW + 15 + TRIGGER_WITHIN
"""From the lost host's kill: up to a heartbeat period since the last heartbeat, the
zombie window, the server's proactive evaluation (every few seconds) and the trigger."""
LEASE_MINUTES = 120.0
"""The rows' rolling lease, emulated: 360 real seconds, longer than either bound, so a
session that ends before it was stopped by someone."""
ZOMBIE_FILE = REPO_ROOT / "automations" / "flow-run-heartbeats-stopped.yaml"

ROWS = [
    pytest.param(
        Scenario(
            "(h) SIGKILL, tagged at run time, guard off, hook's stop refused",
            "sigkill-reaper",
            "reaper",
            ("Crashed",),
            TRIGGER_WITHIN,
            LEASE_MINUTES,
            (("ARR_MAX_ATTEMPTS", "1"), ("ARR_STOP_ON_PROCESS_DEATH", "false")),
        ),
        id="h-sigkill-reaped-by-trigger",
    ),
    # Last: it kills the worker (the next test starts another).
    pytest.param(
        Scenario(
            "(i) host lost: worker, flow run and guard SIGKILLed",
            "lost-host",
            "reaper",
            ("Crashed",),
            LOST_HOST_WITHIN,
            LEASE_MINUTES,
            (("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS)),),
        ),
        id="i-lost-host-zombie-reaped",
    ),
]


async def wait_ready(scene: Scene) -> None:
    """Until the run owns a Ready session and has a pid (its long lease is renewed only
    every 180 real seconds: no renewal to wait for)."""

    async def ready() -> bool | None:
        assert scene.run_id is not None
        run = await scene.prefect.read_flow_run(scene.run_id)
        if run.state is not None and run.state.is_final():
            raise StackError(f"the run ended before its session was Ready: {run.state}")
        owned = [
            t.removeprefix(OWNER_TAG_PREFIX) for t in run.tags if t.startswith(OWNER_TAG_PREFIX)
        ]
        if not owned or not run.infrastructure_pid:
            return None
        scene.session_id = owned[0]
        scene.pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
        scene.stack.flow_run_pids.add(scene.pid)
        entry = session_entry(scene.stack.ledger(), scene.session_id)
        return True if entry is not None and entry["status"] == "Ready" else None

    await until(ready, timeout=90, what="the run's session to be Ready", describe=scene.describe)


async def refuse_next_stop(scene: Scene) -> None:
    """The next stop of the scene's session is answered 503 (the hook tries once)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{scene.stack.emulator_url}/_emulator/faults",
            json={
                "kind": "server_error",
                "route": scene.stop_route(),
                "session_id": scene.session_id,
            },
        )
    response.raise_for_status()


def create_zombie_automation(stack: Stack, workdir: Path) -> None:
    """``prefect automation create --from-file`` (the README's way) on the shipped file,
    its window shortened for this test's 30 s heartbeats."""
    spec = yaml.safe_load(ZOMBIE_FILE.read_text())
    spec["trigger"]["within"] = ZOMBIE_WINDOW
    path = workdir / "zombie-automation.yaml"
    path.write_text(yaml.safe_dump(spec))
    stack._run_cli(
        ["prefect", "automation", "create", "--from-file", str(path)],
        cwd=workdir,
        what="prefect automation create",
        env=stack.user_env,
    )


async def delete_automation(prefect: PrefectClient, name: str) -> None:
    for automation in await prefect.read_automations_by_name(name):
        await prefect.delete_automation(automation.id)


async def kill(scene: Scene) -> float:
    """End the run as the row says; the kill's instant in emulated time."""
    assert scene.pid is not None
    guards = session_guards_of(scene.pid)
    emulated, wall = scene.stack.emulated_now()
    at = time.time()
    if scene.scenario.trigger == "sigkill-reaper":
        os.kill(scene.pid, signal.SIGKILL)
    else:
        worker = scene.stack.processes["worker"].pid
        sigkill(worker)
        for pid in [*guards, scene.pid]:
            sigkill(pid)
    return emulated + (at - wall) * TIME_SCALE


@pytest.mark.parametrize("scenario", ROWS)
async def test_session_is_reaped_through_the_trigger(
    live_worker: Stack, scenario: Scenario
) -> None:
    """The reaper's trigger stops the session of a run no other layer can help, in time."""
    stack = live_worker
    zombie = yaml.safe_load(ZOMBIE_FILE.read_text())["name"]
    async with PrefectClient(stack.api_url) as prefect:
        scene = Scene(stack, prefect, scenario)
        try:
            if scenario.trigger == "lost-host":
                create_zombie_automation(stack, stack.workdir)
            await scene.start()
            await wait_ready(scene)
            if scenario.trigger == "sigkill-reaper":
                await refuse_next_stop(scene)
            await asyncio.sleep(AFTER_READY)
            killed = await kill(scene)
            if scenario.trigger == "lost-host":
                # Another host's worker: the reaper's run needs one.
                await asyncio.to_thread(stack.replace_worker)
            entry = await scene.wait_session_ended()
            overrun = parse_time(entry["ended_at"]) - killed
            seconds_to_stop = max(0.0, overrun / TIME_SCALE)
            run = await scene.wait_run_final()
            who, event = await scene.who_stopped(entry)
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
        finally:
            if scenario.trigger == "lost-host":
                await delete_automation(prefect, zombie)
    state = (run.state.name if run.state else None) or "?"
    record(
        ScenarioResult(
            scenario.name,
            who,
            seconds_to_stop,
            overrun,
            state,
            expected=scenario.stopped_by,
            lease_minutes=scenario.lease_minutes,
        )
    )
    context = f"{scenario.name}: stopped by {who}, run {state}, entry {entry}, event {event}"
    assert who == "reaper", context
    assert event is not None
    assert event.payload["dry_run"] is False, context
    assert entry["end_reason"] == "stopped", context
    assert seconds_to_stop <= scenario.within, context
    assert overrun <= scenario.lease_minutes * 60 + OVERRUN_TOLERANCE, context
    assert state in scenario.final_states, context
    if scenario.trigger == "lost-host":
        assert run.state is not None
        assert "heartbeats" in (run.state.message or ""), run.state
    ledger = stack.ledger()
    assert ledger["running"] == 0, f"sessions left running: {ledger}"
    assert session_entry(ledger, entry["id"]) is not None
