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


def state_event(state: str, tags: list[str]) -> ReceivedEvent:
    """The event the server emits when a flow run with ``tags`` enters ``state``."""
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
                "prefect.resource.name": "render-batch",
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
    ("state", "tags", "fires"),
    [
        pytest.param("Crashed", ["arr", "rendering", OWNER], True, id="crashed-owner"),
        pytest.param("Cancelled", [OWNER], True, id="cancelled-owner"),
        pytest.param("Cancelled", [OWNER, f"{OWNER_TAG_PREFIX}pf-second"], True, id="two-sessions"),
        pytest.param("Completed", [OWNER], False, id="completed-owner"),
        pytest.param("Failed", [OWNER], False, id="failed-owner"),
        pytest.param("Cancelling", [OWNER], False, id="cancelling-owner"),
        pytest.param("Crashed", ["arr", "rendering"], False, id="crashed-no-session"),
        pytest.param("Crashed", ["arr-session"], False, id="tag-without-id"),
        pytest.param("Crashed", ["arr", "maintenance"], False, id="reaper-itself-crashed"),
    ],
)
def test_reaper_trigger_matches_runs_that_owned_a_session(
    state: str, tags: list[str], fires: bool
) -> None:
    """The trigger fires for a run tagged arr-session:* that ends Crashed or Cancelled,
    and for nothing else (not the reaper's own runs: no loop)."""
    trigger = reaper_automation().trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.covers(state_event(state, tags)) is fires


def test_reaper_trigger_runs_the_reaper_after_the_hooks() -> None:
    """It runs this deployment immediately on each event, scheduled a minute later with a
    one-minute grace: the run's own hooks get the first chance to stop its sessions."""
    automation = reaper_automation()
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.immediate  # reactive, threshold 1, within 0: one reaper per event
    assert trigger.threshold == 1
    [action] = automation.actions
    assert isinstance(action, RunDeployment)
    assert action.source == "selected"
    assert action.parameters == {"grace_minutes": 1, "dry_run": False}
    assert action.schedule_after == timedelta(minutes=1)
    assert automation.enabled
