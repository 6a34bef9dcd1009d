"""The reaper's deployment trigger, on the real server after the README's ``prefect deploy``.

``prefect deploy`` must have created the automation from prefect.yaml, and the server
must fire it for every flow run that ends Crashed, naming that run, whenever the run
tagged itself: a run of a user's flow created with no tag at all, which goes Running (the
server then caches its tags for 5 minutes) and only then tags itself ``arr-session:<id>``,
still gets its reaper run (a minute later, grace one minute); a crashed reaper run gets
none. The scheduled reaper runs are deleted once seen: waiting the minute for them to run
adds nothing (tests/e2e/test_teardown_reactive.py lets one run and stop a session, and
tests/unit/test_prefect_yaml.py covers the trigger's matching case by case).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.states import Crashed, Running

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._stack import Stack, StackError
from tests.e2e.conftest import note_timing

pytestmark = pytest.mark.e2e

AUTOMATION = "reap-after-session-owner-crashed-or-cancelled"
FIRE_TIMEOUT = 60.0
"""Real seconds for the server to evaluate the event and run the action (~ a few)."""


@flow(name="e2e-users-pipeline")
def session_owner() -> None:
    """Stands in for a user's flow that owned a session; never run, only its state and
    tags are set."""


@flow(name="reap-orphaned-sessions")
def reaper_look_alike() -> None:
    """A flow named as the reaper's (the trigger leaves out runs of that flow)."""


async def crash_a_run(
    prefect: PrefectClient, owner_tag: str | None, flow: Any = session_owner
) -> FlowRun:
    """A flow run created with no tag that goes Running, tags itself ``owner_tag`` (as
    rendering_session does once its session exists), then goes Crashed (as a worker
    reports a killed flow-run process)."""
    run = await prefect.create_flow_run(flow, tags=[], state=Running())
    if owner_tag is not None:
        await prefect.update_flow_run(run.id, tags=[owner_tag])
    await prefect.set_flow_run_state(run.id, Crashed(message="e2e: process killed"), force=True)
    return run


async def reaper_runs(prefect: PrefectClient, reaper_id: UUID, since: datetime) -> list[FlowRun]:
    runs = await prefect.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[reaper_id]))
    )
    return [r for r in runs if r.created is not None and r.created >= since]


async def test_deploy_creates_the_reaper_trigger(stack: Stack) -> None:
    """After the README's deploy, the reaper deployment owns the automation, enabled."""
    async with PrefectClient(stack.api_url) as prefect:
        reaper = await prefect.read_deployment_by_name(
            "reap-orphaned-sessions/reap-orphaned-sessions"
        )
        owned = await prefect.read_resource_related_automations(f"prefect.deployment.{reaper.id}")
    [automation] = [a for a in owned if a.name == AUTOMATION]
    assert automation.enabled
    trigger = automation.trigger.model_dump(mode="json")
    assert set(trigger["expect"]) == {"prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"}
    assert trigger["match_related"] == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": "!reap-orphaned-sessions",
    }
    [action] = automation.actions
    dumped = action.model_dump(mode="json")
    assert (dumped["type"], dumped["deployment_id"]) == ("run-deployment", str(reaper.id))
    assert dumped["parameters"] == {
        "grace_minutes": 1,
        "dry_run": False,
        "owner_flow_run": "{{ event.resource.id }}",
    }


async def test_reaper_trigger_fires_for_a_run_tagged_at_run_time(stack: Stack) -> None:
    """A user's flow run created untagged, tagged arr-session:* only once Running, that
    ends Crashed, schedules one reaper run a minute later naming it; a crashed run of the
    reaper's flow (crashed first) schedules none."""
    async with PrefectClient(stack.api_url) as prefect:
        reaper = await prefect.read_deployment_by_name(
            "reap-orphaned-sessions/reap-orphaned-sessions"
        )
        since = datetime.now(UTC) - timedelta(seconds=1)
        await crash_a_run(prefect, None, reaper_look_alike)
        owner = await crash_a_run(prefect, f"{OWNER_TAG_PREFIX}e2e-{uuid4()}")
        crashed_at = datetime.now(UTC)

        deadline = time.monotonic() + FIRE_TIMEOUT
        while not (runs := await reaper_runs(prefect, reaper.id, since)):
            if time.monotonic() > deadline:
                raise StackError(f"no reaper run {FIRE_TIMEOUT:.0f}s after run {owner.id} crashed")
            await asyncio.sleep(0.5)
        # Events are evaluated in order: the reaper look-alike's came first, so had it
        # fired, its reaper run would exist by now too.
        await asyncio.sleep(2)
        runs = await reaper_runs(prefect, reaper.id, since)
        try:
            [run] = runs
            assert run.parameters == {
                "grace_minutes": 1,
                "dry_run": False,
                "owner_flow_run": f"prefect.flow-run.{owner.id}",
            }
            assert run.expected_start_time is not None
            delay = run.expected_start_time - crashed_at
            assert timedelta(seconds=55) <= delay <= timedelta(seconds=60 + FIRE_TIMEOUT), delay
        finally:
            for run in runs:
                await prefect.delete_flow_run(run.id)


UNRELATED_RUNS = 5


async def test_cost_of_the_wide_trigger(stack: Stack) -> None:
    """What a run that owned no session costs: one short reaper run that completes (and,
    having no session to look at, stops nothing). Measured for UNRELATED_RUNS crashed
    runs of a flow that never had a session; printed in the e2e summary."""
    async with PrefectClient(stack.api_url) as prefect:
        reaper = await prefect.read_deployment_by_name(
            "reap-orphaned-sessions/reap-orphaned-sessions"
        )
        since = datetime.now(UTC) - timedelta(seconds=1)
        crashed = [await crash_a_run(prefect, None) for _ in range(UNRELATED_RUNS)]
        named = {f"prefect.flow-run.{run.id}" for run in crashed}

        def ours(runs: list[FlowRun]) -> list[FlowRun]:
            return [r for r in runs if r.parameters.get("owner_flow_run") in named]

        deadline = time.monotonic() + FIRE_TIMEOUT + 60 + 120
        while True:
            runs = ours(await reaper_runs(prefect, reaper.id, since))
            if len(runs) == UNRELATED_RUNS and all(r.state and r.state.is_final() for r in runs):
                break
            if time.monotonic() > deadline:
                raise StackError(f"reaper runs not all over: {[(r.name, r.state) for r in runs]}")
            await asyncio.sleep(1)
        seconds = sorted(
            (r.end_time - r.start_time).total_seconds()
            for r in runs
            if r.start_time is not None and r.end_time is not None
        )
        states = {r.state.type.value for r in runs if r.state is not None}
    note_timing(
        f"wide reaper trigger: {UNRELATED_RUNS} crashed runs that owned no session ->"
        f" {len(runs)} reaper runs, {seconds[0]:.1f}-{seconds[-1]:.1f} s each"
        f" (start to end, median {seconds[len(seconds) // 2]:.1f} s), states {sorted(states)}"
    )
    assert states == {"COMPLETED"}
