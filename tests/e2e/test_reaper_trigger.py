"""The reaper's deployment trigger, on the real server after the README's ``prefect deploy``.

``prefect deploy`` must have created the automation from prefect.yaml, and the server
must fire it: a flow run tagged ``arr-session:*`` that ends Crashed schedules a
reap-orphaned-sessions run (a minute later, grace one minute), and one without such a tag
does not. The scheduled reaper run is deleted once seen: waiting the minute for it to run
adds nothing (tests/e2e/test_teardown.py runs the reaper deployment, and
tests/unit/test_prefect_yaml.py covers the trigger's matching case by case).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.states import Crashed, Running

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._stack import Stack, StackError

pytestmark = pytest.mark.e2e

AUTOMATION = "reap-after-session-owner-crashed-or-cancelled"
FIRE_TIMEOUT = 60.0
"""Real seconds for the server to evaluate the event and run the action (~ a few)."""


@flow(name="e2e-session-owner")
def session_owner() -> None:
    """Stands in for a run that owned a session; never run, only its state is set."""


async def crash_a_run(prefect: PrefectClient, tags: list[str]) -> FlowRun:
    """A flow run with ``tags`` that goes Running, then Crashed (as a worker reports a
    killed flow-run process)."""
    run = await prefect.create_flow_run(session_owner, tags=tags, state=Running())
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
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.arr-session:*",
    }
    [action] = automation.actions
    dumped = action.model_dump(mode="json")
    assert (dumped["type"], dumped["deployment_id"]) == ("run-deployment", str(reaper.id))
    assert dumped["parameters"] == {"grace_minutes": 1, "dry_run": False}


async def test_reaper_trigger_fires_for_a_crashed_session_owner(stack: Stack) -> None:
    """A Crashed run tagged arr-session:* schedules one reaper run a minute later; a
    Crashed run without the tag (crashed first) schedules none."""
    async with PrefectClient(stack.api_url) as prefect:
        reaper = await prefect.read_deployment_by_name(
            "reap-orphaned-sessions/reap-orphaned-sessions"
        )
        since = datetime.now(UTC) - timedelta(seconds=1)
        await crash_a_run(prefect, ["e2e", "no-session"])
        owner = await crash_a_run(prefect, ["e2e", f"{OWNER_TAG_PREFIX}e2e-{uuid4()}"])
        crashed_at = datetime.now(UTC)

        deadline = time.monotonic() + FIRE_TIMEOUT
        while not (runs := await reaper_runs(prefect, reaper.id, since)):
            if time.monotonic() > deadline:
                raise StackError(f"no reaper run {FIRE_TIMEOUT:.0f}s after run {owner.id} crashed")
            await asyncio.sleep(0.5)
        # Events are evaluated in order: the untagged run's came first, so had it fired,
        # its reaper run would exist by now too.
        await asyncio.sleep(2)
        runs = await reaper_runs(prefect, reaper.id, since)
        try:
            [run] = runs
            assert run.parameters == {"grace_minutes": 1, "dry_run": False}
            assert run.expected_start_time is not None
            delay = run.expected_start_time - crashed_at
            assert timedelta(seconds=55) <= delay <= timedelta(seconds=60 + FIRE_TIMEOUT), delay
        finally:
            for run in runs:
                await prefect.delete_flow_run(run.id)
