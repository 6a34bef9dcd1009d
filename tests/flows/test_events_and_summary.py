"""Events (documented schema, related to the run), the shipped Automations, and the summary."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with Prefect, its stubs do not
from prefect.events.schemas.events import Event
from prefect.server.events.schemas.automations import AutomationCore, EventTrigger
from prefect.server.events.schemas.events import Event as ServerEvent
from prefect.server.events.schemas.events import ReceivedEvent

from arr_prefect.emulator import Emulator
from arr_prefect.errors import SessionExpiredError, SessionFailedError
from arr_prefect.flows import events as events_module
from arr_prefect.flows import render_batch
from arr_prefect.flows.events import SESSION_EVENTS, RunRef
from arr_prefect.settings import ArrSettings

pytestmark = pytest.mark.usefixtures("arr")

AUTOMATIONS = Path(__file__).resolve().parents[2] / "automations"
CREATE_ROUTE = {"v1": "v1.create", "2021-01-01": "v2021.create"}
EXTEND_ROUTE = {"v1": "v1.extend", "2021-01-01": "v2021.extend"}
COMMON = {"session_id", "size", "api_version", "elapsed_seconds", "billed_minutes",
          "estimated_cost", "currency"}  # fmt: skip


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Every event our code emits, as Prefect would build it."""
    seen: list[Event] = []

    def record(event: str, **kwargs: Any) -> None:
        seen.append(Event(event=event, **kwargs))

    monkeypatch.setattr(events_module, "emit_event", record)
    return seen


def automation(name: str) -> AutomationCore:
    """A shipped automation file, parsed as the server parses it."""
    return AutomationCore.model_validate(yaml.safe_load((AUTOMATIONS / name).read_text()))


def trigger_of(name: str) -> EventTrigger:
    trigger = automation(name).trigger
    assert isinstance(trigger, EventTrigger)
    return trigger


def received(event: Event) -> ReceivedEvent:
    """The event as the server receives it (what triggers are evaluated on)."""
    return ServerEvent.model_validate(event.model_dump()).receive()


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e.event == name]


async def test_a_run_emits_the_lifecycle_events_with_payloads(
    emulator: Emulator,
    emitted: list[Event],
    api_version: str,
    settings: ArrSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """created, ready, lease-renewed, stopped: each about the session, related to the run,
    with size, API version, elapsed, billed minutes and a cost in the configured currency."""
    monkeypatch.setattr(settings, "price_standard_per_hour", 3.0)
    monkeypatch.setattr(settings, "price_currency", "EUR")
    state = await render_batch(
        job_parameters={"frames": 4, "seconds_per_frame": 60}, lease_minutes=2, return_state=True
    )
    summary = await state.aresult()
    run_id = str(state.state_details.flow_run_id)
    names = [e.event for e in emitted]
    assert names[:2] == ["arr.session.created", "arr.session.ready"]
    assert names[-1] == "arr.session.stopped"
    assert len(named(emitted, "arr.session.lease-renewed")) == summary.lease_renewals >= 2
    for event in emitted:
        assert event.event in SESSION_EVENTS
        assert event.resource.id == f"arr.session.{summary.session_id}"
        assert event.resource["arr.session.size"] == "standard"
        assert event.resource["arr.api-version"] == api_version
        assert set(event.payload) >= COMMON, event.event
        assert f"prefect.flow-run.{run_id}" in {r.id for r in event.related}
        flow_run = next(r for r in event.related if r.id.startswith("prefect.flow-run."))
        assert flow_run.role == "flow-run"
    ready = named(emitted, "arr.session.ready")[0].payload
    assert ready["time_to_ready_seconds"] == summary.time_to_ready_seconds
    created = named(emitted, "arr.session.created")[0].payload
    # The first minute is billed the moment it starts.
    assert (created["estimated_cost"], created["currency"]) == (3.0 / 60, "EUR")
    assert created["credentials_block"] is None
    stopped = named(emitted, "arr.session.stopped")[0].payload
    assert stopped["stopped_by"] == "finally"
    assert stopped["billed_minutes"] == summary.billed_minutes
    assert summary.billed_minutes is not None
    assert stopped["estimated_cost"] == summary.estimated_cost == summary.billed_minutes * 3 / 60
    assert stopped["currency"] == summary.currency == "EUR"
    assert stopped["elapsed_seconds"] == pytest.approx(summary.run_seconds, abs=0.11)


async def test_a_session_outside_any_flow_run_emits_the_same_events(
    emulator: Emulator, emitted: list[Event]
) -> None:
    """rendering_session outside a flow run (a script, a notebook): no run to tag or
    relate, but the same events from created to stopped, so Automations still see it."""
    from arr_prefect.flows import rendering_session

    async with rendering_session(lease=timedelta(minutes=4)) as session:
        pass
    names = [e.event for e in emitted]
    assert names == ["arr.session.created", "arr.session.ready", "arr.session.stopped"]
    for event in emitted:
        assert event.resource.id == f"arr.session.{session.id}"
        assert set(event.payload) >= COMMON, event.event
        assert not [r for r in event.related if r.id.startswith("prefect.flow-run.")]


async def test_session_ending_in_error_emits_failed_matched_by_the_automation(
    emulator: Emulator, emitted: list[Event], api_version: str
) -> None:
    """A session the service ends in Error emits arr.session.failed with its message, and
    the shipped "session ended in Error" automation's trigger covers that event."""
    emulator.faults.add("session_error", CREATE_ROUTE[api_version])
    with pytest.raises(SessionFailedError):
        await render_batch()
    failed = named(emitted, "arr.session.failed")
    assert len(failed) == 1
    assert "The session failed to start" in failed[0].payload["reason"]
    trigger = trigger_of("session-ended-in-error.yaml")
    assert trigger.covers(received(failed[0]))
    assert trigger.expects("arr.session.failed")
    others = [e for e in emitted if e.event != "arr.session.failed"]
    assert others
    assert not any(trigger.expects(e.event) for e in others)


async def test_session_whose_lease_ran_out_emits_expired_matched_by_the_automation(
    emulator: Emulator, emitted: list[Event], api_version: str
) -> None:
    """A session whose lease runs out (every renewal refused) emits arr.session.expired
    with the reason, after its Ready, and the "running too long" automation's trigger
    closes its window on it as on a stop."""
    emulator.faults.add("server_error", EXTEND_ROUTE[api_version], times=10_000, status=500)
    with pytest.raises(SessionExpiredError):
        await render_batch(job_parameters={"frames": 20, "seconds_per_frame": 60}, lease_minutes=2)
    names = [e.event for e in emitted]
    assert "arr.session.lease-renewed" not in names
    assert names.index("arr.session.ready") < names.index("arr.session.expired")
    [expired] = named(emitted, "arr.session.expired")
    assert set(expired.payload) >= COMMON | {"reason"}
    assert expired.payload["reason"]
    [ready] = named(emitted, "arr.session.ready")
    assert expired.resource.id == ready.resource.id
    trigger = trigger_of("session-running-too-long.yaml")
    assert trigger.covers(received(expired))
    assert trigger.expects("arr.session.expired")
    assert trigger.bucketing_key(received(ready)) == trigger.bucketing_key(received(expired))


async def test_running_too_long_automation_tracks_each_session_from_ready_to_end(
    emulator: Emulator, emitted: list[Event]
) -> None:
    """The "running longer than N hours" automation starts a window on our Ready event and
    closes it on our stopped event for the same session (its for_each key)."""
    await render_batch(job_parameters={"frames": 1, "seconds_per_frame": 1})
    trigger = trigger_of("session-running-too-long.yaml")
    ready = received(named(emitted, "arr.session.ready")[0])
    stopped = received(named(emitted, "arr.session.stopped")[0])
    assert trigger.posture == "Proactive"
    assert trigger.covers(ready)
    assert trigger.starts_after(ready.event)
    assert trigger.covers(stopped)
    assert trigger.expects(stopped.event)
    assert trigger.bucketing_key(ready) == trigger.bucketing_key(stopped)
    assert trigger.within.total_seconds() == 4 * 3600
    for name in ("arr.session.failed", "arr.session.expired"):
        assert trigger.expects(name)
    # The action cancels the owning flow run, which the Ready event names.
    assert [a.type for a in automation("session-running-too-long.yaml").actions] == [
        "cancel-flow-run"
    ]
    assert any(r.role == "flow-run" for r in ready.related)


def test_automation_files_load_with_the_cli_model() -> None:
    """Every file is what ``prefect automation create --from-file`` reads (client model)."""
    from prefect.events.schemas.automations import AutomationCore as ClientAutomation

    for path in sorted(AUTOMATIONS.glob("*.yaml")):
        loaded = ClientAutomation.model_validate(yaml.safe_load(path.read_text()))
        assert loaded.name.startswith("arr-"), path


def test_related_names_flow_and_deployment() -> None:
    """A run started from a deployment relates its events to the deployment too."""
    run, flow, deployment = uuid4(), uuid4(), uuid4()
    related = RunRef(str(run), "my-run", str(flow), str(deployment)).related()
    assert {(r["prefect.resource.id"], r["prefect.resource.role"]) for r in related} == {
        (f"prefect.flow-run.{run}", "flow-run"),
        (f"prefect.flow.{flow}", "flow"),
        (f"prefect.deployment.{deployment}", "deployment"),
    }


def test_quota_wait_event(emitted: list[Event]) -> None:
    """emit_quota_wait: the helper the session quota calls while it waits for a slot."""
    events_module.emit_quota_wait(
        "arr-sessions-acct", 75.04, size="standard", api_version="v1", run=RunRef(str(uuid4()))
    )
    (event,) = emitted
    assert event.event == "arr.session.quota-wait"
    assert event.resource.id == "arr.quota.arr-sessions-acct"
    assert event.payload["waited_seconds"] == 75.0
    assert event.related[0].role == "flow-run"


async def test_waiting_for_a_session_slot_emits_quota_wait(emitted: list[Event]) -> None:
    """Every report of a wait for a quota slot is also an arr.session.quota-wait event."""
    from arr_prefect.flows.quota import SlotWait, report_slot_wait

    run_id = str(uuid4())
    wait = SlotWait("arr-sessions-acct", run_id, limit=3, in_use=3, waited_seconds=95.0)
    await report_slot_wait(wait, "acquired")
    (event,) = emitted
    assert event.event == "arr.session.quota-wait"
    assert event.payload["phase"] == "acquired"
    assert event.payload["waited_seconds"] == 95.0
    assert (event.payload["limit_size"], event.payload["in_use"]) == (3, 3)
    assert event.related[0].id == f"prefect.flow-run.{run_id}"


async def test_progress_artifacts_follow_the_wait_and_the_job(emulator: Emulator) -> None:
    """The run shows its wait for Ready and its job's frames as progress artifacts, both at
    100 % when done, described in words."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = await render_batch(
        job_parameters={"frames": 4, "seconds_per_frame": 30}, return_state=True
    )
    async with get_client() as prefect:
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    by_key = {a.key: a for a in artifacts}
    wait, job = by_key["session-ready-wait"], by_key["render-job-progress"]
    assert (wait.type, job.type) == ("progress", "progress")
    assert (wait.data, job.data) == (100.0, 100.0)
    assert wait.description is not None
    assert "is Ready, 1 min after the create request" in wait.description
    assert job.description == "4 of 4 done: frame 4 of 4 rendered"


async def test_a_session_ready_at_once_writes_no_wait_artifact(emulator: Emulator) -> None:
    """A wait for Ready too short to show (under 10 s of session time) costs the Prefect API
    nothing: no session-ready-wait artifact, created or updated."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    emulator.state.startup_seconds = 5
    state = await render_batch(
        job_parameters={"frames": 1, "seconds_per_frame": 1}, return_state=True
    )
    async with get_client() as prefect:
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    keys = {a.key for a in artifacts if a.key}
    assert "session-ready-wait" not in keys
    assert {"render-batch-summary", "render-job-progress"} <= keys


async def test_report_progress_outside_a_job_does_nothing() -> None:
    """A callable used outside render-batch can call report_progress harmlessly."""
    from arr_prefect.flows import report_progress

    await report_progress(1, 2, "half")


async def test_summary_reads_at_a_glance(emulator: Emulator) -> None:
    """The artifact's table has a real header, durations in words, billing explained, a
    timeline of create -> Ready -> job -> stop; the log gets one compact line."""
    summary = await render_batch(job_parameters={"frames": 2, "seconds_per_frame": 45})
    markdown = summary.markdown()
    assert "| | |" not in markdown
    assert "| What | This run |" in markdown
    assert "billed per started minute" in markdown
    assert "no price configured" in markdown
    phases = [p.name for p in summary.timeline]
    assert phases == ["create → Ready", "job", "stop"]
    assert summary.timeline[1].seconds == 90.0
    assert "| job | +1 min | 1 min 30 s |" in markdown
    assert summary.time_to_ready_seconds == 60.0
    assert "1 min after create" in markdown
    line = summary.one_line()
    assert "\n" not in line
    assert "Ready after 1 min" in line
    assert "billed 3 min" in line
    for raw in ("0:0", "None", "seconds"):
        assert raw not in line
