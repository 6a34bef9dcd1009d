"""prefect.yaml, read as ``prefect deploy`` reads it: where runs find the code, the
reaper's trigger and its hourly backstop.

The trigger is built exactly as Prefect 3.9's ``prefect deploy`` builds it
(``_initialize_deployment_triggers`` then ``as_automation``), validated by the server's
own automation schema (which refuses triggers that could loop on flow-run events), and
evaluated by the server's matcher against the state-change events the server emits for a
flow run (``prefect.flow-run.<state name>``, the run's tags as related ``prefect.tag.*``
resources). tests/e2e/test_reaper_trigger.py checks that it is created and fires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import yaml  # type: ignore[import-untyped]  # Prefect's dependency, no stubs
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.server.events.actions import RunDeployment
from prefect.server.events.schemas.automations import AutomationCore, EventTrigger
from prefect.server.events.schemas.events import ReceivedEvent

from arr_prefect.flows.session import OWNER_TAG_PREFIX

PREFECT_YAML = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in PREFECT_YAML["deployments"]}
REAPER = DEPLOYMENTS["reap-orphaned-sessions"]


def test_pull_step_needs_no_checkout() -> None:
    """Runs start in the worker's own directory and import the installed package: no
    checkout, no environment variable naming one, nothing copied or cloned."""
    assert PREFECT_YAML["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "."}}
    ]
    for deployment in PREFECT_YAML["deployments"]:
        assert "pull" not in deployment
        assert deployment["entrypoint"].startswith("arr_prefect.flows."), deployment
        assert ".py" not in deployment["entrypoint"], deployment


def test_reaper_schedule_is_an_hourly_backstop() -> None:
    """The interval schedule stays, hourly: the trigger does the reacting."""
    assert REAPER["schedules"] == [{"interval": 3600, "active": True}]


def reaper_automation() -> AutomationCore:
    """The reaper's trigger as the server stores it after ``prefect deploy``."""
    [trigger] = _initialize_deployment_triggers(REAPER["name"], REAPER["triggers"])
    trigger.set_deployment_id(uuid4())
    client_side = trigger.as_automation()
    return AutomationCore.model_validate(client_side.model_dump(mode="json"))


def state_event(state: str, tags: list[str], flow: str = "render-batch") -> ReceivedEvent:
    """The event the server emits when a flow run of ``flow`` with ``tags`` (as the
    server's related-resource cache holds them) enters ``state``."""
    run = uuid4()
    return ReceivedEvent(
        occurred=datetime.now(UTC),
        event=f"prefect.flow-run.{state}",
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run}",
            "prefect.resource.name": "clever-otter",
            "prefect.state-name": state,
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{uuid4()}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            },
            *(
                {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in tags
            ),
        ],
        id=uuid4(),
    )


OWNER = f"{OWNER_TAG_PREFIX}0b5d0e1c-9d4c-4b7e-9a4e-2f0e8e3f7a11"


@pytest.mark.parametrize(
    ("state", "tags", "flow", "fires"),
    [
        pytest.param(
            "Crashed", ["arr", "rendering", OWNER], "render-batch", True, id="crashed-owner"
        ),
        pytest.param("Cancelled", [OWNER], "render-batch", True, id="cancelled-owner"),
        # Tagged after its first state event: the cached tags lack the owner tag.
        pytest.param("Crashed", ["arr", "rendering"], "render-batch", True, id="tag-not-cached"),
        pytest.param("Cancelled", [], "my-pipeline", True, id="user-flow-never-tagged-arr"),
        pytest.param("Completed", [OWNER], "render-batch", False, id="completed-owner"),
        pytest.param("Failed", [OWNER], "render-batch", False, id="failed-owner"),
        pytest.param("Cancelling", [OWNER], "render-batch", False, id="cancelling-owner"),
        pytest.param("Running", [OWNER], "render-batch", False, id="running-owner"),
        pytest.param(
            "Crashed", ["arr", "maintenance"], "reap-orphaned-sessions", False, id="reaper-itself"
        ),
        pytest.param(
            "Cancelled", [], "reap-orphaned-sessions", False, id="reaper-itself-cancelled"
        ),
    ],
)
def test_reaper_trigger_matches_every_crashed_or_cancelled_run(
    state: str, tags: list[str], flow: str, fires: bool
) -> None:
    """The trigger fires for any run that ends Crashed or Cancelled, whatever its cached
    tags say (the reaper checks ownership), and never for the reaper's own runs (no loop)."""
    trigger = reaper_automation().trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.covers(state_event(state, tags, flow)) is fires


def test_reaper_trigger_runs_the_reaper_after_the_hooks() -> None:
    """It runs this deployment immediately on each event, scheduled a minute later with a
    one-minute grace (the run's own hooks get the first chance to stop its sessions),
    naming the run that ended."""
    automation = reaper_automation()
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.immediate  # reactive, threshold 1, within 0: one reaper per event
    assert trigger.threshold == 1
    [action] = automation.actions
    assert isinstance(action, RunDeployment)
    assert action.source == "selected"
    assert action.parameters == {
        "grace_minutes": 1,
        "dry_run": False,
        "owner_flow_run": "{{ event.resource.id }}",
    }
    assert action.schedule_after == timedelta(minutes=1)
    assert automation.enabled
