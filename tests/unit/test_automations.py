"""The zombie-run automation shipped in automations/: parsed as the server parses it, and
evaluated against the events a live, a finished and a lost flow run emit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import yaml  # type: ignore[import-untyped]  # Prefect's dependency, no stubs
from prefect.server.events.actions import ChangeFlowRunState
from prefect.server.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.settings.models.flows import FlowsSettings

ZOMBIE = Path(__file__).resolve().parents[2] / "automations" / "flow-run-heartbeats-stopped.yaml"


def zombie_automation() -> AutomationCore:
    return AutomationCore.model_validate(yaml.safe_load(ZOMBIE.read_text()))


def run_event(name: str, run: str) -> ReceivedEvent:
    return ReceivedEvent(
        occurred=datetime.now(UTC),
        event=name,
        resource={"prefect.resource.id": f"prefect.flow-run.{run}"},
        id=uuid4(),
    )


def test_a_run_whose_heartbeats_stop_is_marked_crashed() -> None:
    """Proactive per flow run: a heartbeat opens the window, any later event of the run
    (heartbeat or final state) closes it; silence marks the run Crashed."""
    automation = zombie_automation()
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture == Posture.Proactive
    assert trigger.for_each == {"prefect.resource.id"}
    run = str(uuid4())
    assert trigger.starts_after("prefect.flow-run.heartbeat")
    for closes in ("prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                   "prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"):  # fmt: skip
        assert trigger.covers(run_event(closes, run)), closes
    assert not trigger.covers(run_event("arr.session.ready", run))
    [action] = automation.actions
    assert isinstance(action, ChangeFlowRunState)
    assert action.state.value == "CRASHED"
    assert automation.enabled


def test_window_outlasts_three_default_heartbeats() -> None:
    """A live run with Prefect's default heartbeat frequency is never marked Crashed."""
    trigger = zombie_automation().trigger
    assert isinstance(trigger, EventTrigger)
    default = FlowsSettings.model_fields["heartbeat_frequency"].default
    assert trigger.within >= timedelta(seconds=3 * default)
