"""The kill matrix's reactive rows: the reaper's trigger, not its hourly schedule, stops a
session whose every other layer is gone, within a bound.

Each row starts a deployment run (render-batch, as tests/e2e/test_teardown.py does, with
its helpers; or a user's flow), waits until its session is Ready, and 20 s later ends it
so that only the reaper can stop its session before a long lease would. (h) and (user h)
run side by side (each spends a minute waiting for its reaper run); (i) runs alone:

- (h) the flow-run process is SIGKILLed with the session guard off, and the crash hook's
  one stop attempt refused (503): the worker reports the run Crashed, the deployment's
  trigger fires although the run's ``arr-session`` tag was added at run time (its state
  events carry the tags cached before), and the reaper it schedules stops the session;
- (user h) the same for a user's own ``def`` flow (tests/e2e/user_flows.py: ``with
  rendering_session``, then blocking work), deployed from a project of its own with
  ``flow.from_source(...).deploy(...)`` and no tags: neither the run nor its Crashed
  event ever carries ``arr``, ``rendering`` or ``arr-session``, only the run's live tags
  do (the owner tag ``rendering_session`` adds), and the reaper still stops the session;
- (i) the host is lost: its worker, the flow-run process and its session guard are
  SIGKILLed at once, and nothing reports the run. Its heartbeats stop (every 30 s for this
  run), the zombie-run automation from automations/ (created the README's way, its window
  shortened to 60 s) marks it Crashed, and the trigger's reaper stops the session.

The stack's scheduler is off, so the reaper's hourly schedule never runs here: a reaper
run can only come from the trigger. Each row asserts that exactly one reaper run names the
killed run as its ``owner_flow_run`` (the trigger's action, ``{{ event.resource.id }}``),
that it completed, that ``arr.reaper.stopped`` for the session (related to the killed
run) was emitted while it ran, and how long after the kill the session stopped (real
seconds).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # Prefect's dependency, no stubs
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._fleet import session_guards_of, sigkill
from tests.e2e._stack import (
    POOL,
    REPO_ROOT,
    TIME_SCALE,
    Stack,
    StackError,
    parse_time,
    session_entry,
)
from tests.e2e.conftest import NOT_MEASURED, ScenarioResult, note_timing, record
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
REAPER = "reap-orphaned-sessions/reap-orphaned-sessions"
USER_FLOWS = Path(__file__).with_name("user_flows.py")
USER_DEPLOYMENT = "render-my-scene/my-scene"
USER_RUN_TAGS = ["e2e", "users-pipeline"]
"""The user's run's tags at creation: none of ours."""
KILLED_BY_SIGKILL = ("sigkill-reaper", "user-sigkill-reaper")
DEPLOY_USER_FLOW = f"""
from prefect import flow

flow.from_source(source=".", entrypoint="user_flows.py:render_my_scene").deploy(
    name="my-scene", work_pool_name="{POOL}", ignore_warnings=True
)
"""
"""What a user types to deploy their flow to a process pool (Prefect's docs' way), from
their project's directory: the deployment's pull step is that directory, no tags."""

SIGKILL_ROW = Scenario(
    "(h) SIGKILL, tagged at run time, guard off, hook's stop refused",
    "sigkill-reaper",
    "reaper",
    ("Crashed",),
    TRIGGER_WITHIN,
    LEASE_MINUTES,
    (("ARR_MAX_ATTEMPTS", "1"), ("ARR_STOP_ON_PROCESS_DEATH", "false")),
)
USER_FLOW_ROW = Scenario(
    "(user h) user's def flow, no arr tag: SIGKILL, guard off, hook's stop refused",
    "user-sigkill-reaper",
    "reaper",
    ("Crashed",),
    TRIGGER_WITHIN,
    LEASE_MINUTES,
    (("ARR_MAX_ATTEMPTS", "1"), ("ARR_STOP_ON_PROCESS_DEATH", "false")),
)
LOST_HOST_ROW = Scenario(
    "(i) host lost: worker, flow run and guard SIGKILLed",
    "lost-host",
    "reaper",
    ("Crashed",),
    LOST_HOST_WITHIN,
    LEASE_MINUTES,
    (("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS)),),
)

# The rows of a group run side by side: each spends most of its time waiting the
# trigger's minute, so (user h) beside (h) adds seconds, not minutes, to the shard.
ROW_GROUPS = [
    # (user h) is (h) for a user's flow and deployment never tagged arr (nor rendering):
    # only the owner tag rendering_session adds at run time ties the run to its session.
    pytest.param((SIGKILL_ROW, USER_FLOW_ROW), id="h-and-user-h-sigkill-reaped-by-trigger"),
    # Alone, and last: it kills the worker (the next test starts another).
    pytest.param((LOST_HOST_ROW,), id="i-lost-host-zombie-reaped"),
]


@pytest.fixture(scope="module")
def user_deployment(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The user's project (a copy of user_flows.py in a directory of its own), deployed
    from there by ``DEPLOY_USER_FLOW`` in the user's environment (the wheel-only venv)."""
    root = tmp_path_factory.mktemp("users-project")
    shutil.copy(USER_FLOWS, root / USER_FLOWS.name)
    env = stack.user_env
    started = time.monotonic()
    stack._run_cli(
        [str(stack.ensure_venv().python), "-c", DEPLOY_USER_FLOW],
        cwd=root,
        what="flow.from_source(...).deploy(...) of the user's flow",
        env=env,
    )
    note_timing(
        f"user's flow deployed with from_source().deploy() in {time.monotonic() - started:.1f} s"
    )
    return USER_DEPLOYMENT


class UserScene(Scene):
    """A scene whose run is the user's deployment (``render_my_scene``), not render-batch."""

    async def start(self) -> None:
        deployment = await self.prefect.read_deployment_by_name(USER_DEPLOYMENT)
        assert not deployment.tags, f"the user's deployment is tagged {deployment.tags}"
        parameters: dict[str, Any] = {"lease_minutes": self.scenario.lease_minutes}
        run = await self.prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters=parameters,
            job_variables={"env": dict(self.scenario.env)},
            tags=USER_RUN_TAGS,
        )
        self.run_id = run.id


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


async def the_reaper_run(
    prefect: PrefectClient, scene: Scene, since: datetime
) -> tuple[FlowRun, list[FlowRun]]:
    """The one reaper run naming the scene's run as its owner (as the trigger's action
    does), once over; and every reaper run created since the row started."""
    reaper = await prefect.read_deployment_by_name(REAPER)
    runs = await prefect.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[reaper.id]))
    )
    recent = [r for r in runs if r.created is not None and r.created >= since]
    owner = f"prefect.flow-run.{scene.run_id}"
    named = [r for r in recent if r.parameters.get("owner_flow_run") == owner]
    assert len(named) == 1, f"reaper runs naming {owner}: {[(r.name, r.state) for r in named]}"
    run = await scene.wait_final(named[0].id, "the trigger's reaper run to end")
    return run, recent


async def run_state_events(prefect: PrefectClient, scene: Scene, name: str) -> list[Event]:
    """The server's ``prefect.flow-run.<name>`` events of the scene's run."""
    page = await prefect.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[f"prefect.flow-run.{name}"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{scene.run_id}"]),
        ),
        limit=10,
    )
    return list(page.events)


async def kill(scene: Scene) -> float:
    """End the run as the row says; the kill's instant in emulated time."""
    assert scene.pid is not None
    guards = session_guards_of(scene.pid)
    emulated, wall = scene.stack.emulated_now()
    at = time.time()
    if scene.scenario.trigger in KILLED_BY_SIGKILL:
        os.kill(scene.pid, signal.SIGKILL)
    else:
        worker = scene.stack.processes["worker"].pid
        sigkill(worker)
        for pid in [*guards, scene.pid]:
            sigkill(pid)
    return emulated + (at - wall) * TIME_SCALE


@pytest.mark.parametrize("rows", ROW_GROUPS)
async def test_sessions_are_reaped_through_the_trigger(
    live_worker: Stack, rows: tuple[Scenario, ...], request: pytest.FixtureRequest
) -> None:
    """The reaper's trigger stops the session of a run no other layer can help, in time."""
    stack = live_worker
    if any(row.trigger == "user-sigkill-reaper" for row in rows):
        request.getfixturevalue("user_deployment")
    async with PrefectClient(stack.api_url) as prefect:
        done = await asyncio.gather(
            *(reaped_through_the_trigger(stack, prefect, row) for row in rows),
            return_exceptions=True,
        )
    failed = [outcome for outcome in done if isinstance(outcome, BaseException)]
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise BaseExceptionGroup("rows failed", failed)
    ledger = stack.ledger()
    assert ledger["running"] == 0, f"sessions left running: {ledger}"


async def reaped_through_the_trigger(
    stack: Stack, prefect: PrefectClient, scenario: Scenario
) -> None:
    """One row: start the run, kill it 20 s after Ready, check the trigger's reaper
    stopped its session in time; its line of the table."""
    zombie = yaml.safe_load(ZOMBIE_FILE.read_text())["name"]
    users = scenario.trigger == "user-sigkill-reaper"
    scene = (UserScene if users else Scene)(stack, prefect, scenario)
    since = datetime.now(UTC) - timedelta(seconds=1)
    try:
        if scenario.trigger == "lost-host":
            create_zombie_automation(stack, stack.workdir)
        await scene.start()
        await wait_ready(scene)
        if scenario.trigger in KILLED_BY_SIGKILL:
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
    reaper_run, reaper_runs = await the_reaper_run(prefect, scene, since)
    check_from_the_trigger(scene, event, reaper_run, reaper_runs)
    if users:
        assert scene.session_id is not None
        crashed_events = await run_state_events(prefect, scene, "Crashed")
        check_never_tagged_arr(run, scene.session_id, crashed_events)
    assert session_entry(stack.ledger(), entry["id"]) is not None


def check_from_the_trigger(
    scene: Scene, event: Event, reaper_run: FlowRun, reaper_runs: list[FlowRun]
) -> None:
    """The session was stopped by the reaper run the trigger made for the killed run: that
    run completed, and ``arr.reaper.stopped`` names the session and the killed run and was
    emitted while it ran. No reaper run of the row lacks an owner (none was scheduled)."""
    context = f"reaper run {reaper_run.name} {reaper_run.state}; event {event}"
    assert reaper_run.state is not None, context
    assert reaper_run.state.is_completed(), context
    assert reaper_run.parameters["grace_minutes"] == 1, context
    unnamed = [r.name for r in reaper_runs if not r.parameters.get("owner_flow_run")]
    assert not unnamed, f"reaper runs not made by the trigger: {unnamed}"
    assert event.resource.id == f"arr.session.{scene.session_id}", context
    assert event.payload["session_id"] == scene.session_id, context
    assert f"prefect.flow-run.{scene.run_id}" in {r.id for r in event.related}, context
    assert reaper_run.start_time is not None, context
    assert reaper_run.end_time is not None, context
    # Both instants come from this machine's clock; a second covers their rounding.
    slack = timedelta(seconds=1)
    assert reaper_run.start_time - slack <= event.occurred, context
    assert event.occurred <= reaper_run.end_time + slack, context


def check_never_tagged_arr(run: FlowRun, session_id: str, crashed_events: list[Event]) -> None:
    """The user's run carries no tag of ours but the owner tag rendering_session added,
    and its Crashed event (what the trigger matched) carries none at all."""
    assert sorted(t for t in run.tags if not ours(t)) == sorted(USER_RUN_TAGS), run.tags
    assert [t for t in run.tags if ours(t)] == [f"{OWNER_TAG_PREFIX}{session_id}"], run.tags
    assert crashed_events, f"no prefect.flow-run.Crashed event for {run.name}"
    for event in crashed_events:
        tags = [r.id.removeprefix("prefect.tag.") for r in event.related if r.role == "tag"]
        assert sorted(tags) == sorted(USER_RUN_TAGS), f"{event.event} related tags {tags}"


def ours(tag: str) -> bool:
    """A tag this package's deployments or rendering_session give a run."""
    return tag.startswith("arr") or tag == "rendering"
