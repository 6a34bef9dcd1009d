"""reap_orphaned_sessions: stops what our finished or vanished flow runs left, nothing else."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.events import Event

from arr_prefect.client import open_client
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.flows import events as events_module
from arr_prefect.flows import reap_orphaned_sessions, record_session_owner
from arr_prefect.tasks import create_session

pytestmark = pytest.mark.usefixtures("arr")


@flow
async def leaves_a_session_behind() -> str:
    """A flow that creates a session, records itself as owner, and never stops it."""
    session = await create_session(lease=timedelta(minutes=30))
    await record_session_owner(session.id)
    return session.id


async def untracked_session() -> str:
    async with open_client() as arr:
        return (await arr.create_session(lease=timedelta(hours=5))).id


async def test_stops_session_of_finished_owner(emulator: Emulator) -> None:
    """A session whose owner completed without stopping it is stopped and reported."""
    session_id = await leaves_a_session_behind()
    report = await reap_orphaned_sessions(grace_minutes=0)
    assert report.stopped == [session_id]
    assert report.decisions[0].owner_state == "Completed"
    assert emulator.running() == []
    async with get_client() as prefect:
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["reaped-sessions"]))
        )
    assert any(session_id in str(a.data) for a in artifacts)


async def test_dry_run_only_reports(emulator: Emulator) -> None:
    """A dry run reports what it would stop and stops nothing."""
    session_id = await leaves_a_session_behind()
    report = await reap_orphaned_sessions(grace_minutes=0, dry_run=True)
    assert report.would_stop == [session_id]
    assert report.stopped == []
    assert [s.id for s in emulator.running()] == [session_id]
    await reap_orphaned_sessions(grace_minutes=0)


async def test_grace_period_protects_recently_finished_owner(emulator: Emulator) -> None:
    """Within the grace period the owner's own teardown gets its chance: nothing is stopped."""
    session_id = await leaves_a_session_behind()
    report = await reap_orphaned_sessions(grace_minutes=60)
    assert report.decisions[0].action == "kept"
    assert "grace" in report.decisions[0].reason
    assert [s.id for s in emulator.running()] == [session_id]
    await reap_orphaned_sessions(grace_minutes=0)


async def test_never_stops_untracked_sessions_unless_told(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """A session no flow run of ours owns is kept, unless an age threshold says otherwise."""
    session_id = await untracked_session()
    report = await reap_orphaned_sessions(grace_minutes=0)
    assert report.decisions[0].action == "kept"
    assert "not ours" in report.decisions[0].reason
    clock.advance(2 * 3600)  # Ready, and two hours old
    young = await reap_orphaned_sessions(grace_minutes=0, stop_untracked_older_than_minutes=240)
    assert young.decisions[0].action == "kept"
    old = await reap_orphaned_sessions(grace_minutes=0, stop_untracked_older_than_minutes=60)
    assert old.stopped == [session_id]


async def test_keeps_session_of_running_owner(emulator: Emulator) -> None:
    """A session whose owner is still scheduled or running is left alone."""
    session_id = await untracked_session()
    async with get_client() as prefect:
        run = await prefect.create_flow_run(
            leaves_a_session_behind, tags=[f"arr-session:{session_id}"]
        )
    report = await reap_orphaned_sessions(grace_minutes=0)
    assert report.decisions[0].action == "kept"
    assert report.decisions[0].owner_flow_run == str(run.id)
    assert [s.id for s in emulator.running()] == [session_id]
    async with get_client() as prefect:
        await prefect.delete_flow_run(run.id)
    # The tag went with the deleted run: the session is untracked now, so still kept.
    report = await reap_orphaned_sessions(grace_minutes=0)
    assert report.decisions[0].action == "kept"
    async with open_client() as arr:
        await arr.stop_session(session_id)


@pytest.mark.parametrize("api_version", ["2021-01-01"], indirect=True)
async def test_stops_session_whose_owner_no_longer_exists(emulator: Emulator) -> None:
    """A 2021-01-01 session named after a flow run that no longer exists is stopped."""
    async with open_client() as arr:
        session = await arr.create_session(
            lease=timedelta(minutes=30), session_id=f"pf-{uuid.uuid4()}-abcdef12"
        )
    report = await reap_orphaned_sessions(grace_minutes=0)
    assert report.stopped == [session.id]
    assert report.decisions[0].reason == "owner flow run no longer exists"


@pytest.mark.parametrize("api_version", ["2021-01-01"], indirect=True)
async def test_grace_period_protects_young_session_of_vanished_owner(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """An owner that no longer exists does not void the grace period: a session younger
    than it is kept (its run may be between create and tag), an older one is stopped."""
    async with open_client() as arr:
        session = await arr.create_session(
            lease=timedelta(hours=2), session_id=f"pf-{uuid.uuid4()}-abcdef12"
        )
    report = await reap_orphaned_sessions(grace_minutes=60)
    assert report.decisions[0].action == "kept"
    assert "grace" in report.decisions[0].reason
    assert [s.id for s in emulator.running()] == [session.id]
    clock.advance(61 * 60)
    report = await reap_orphaned_sessions(grace_minutes=60)
    assert report.stopped == [session.id]


@pytest.fixture
def reaper_events(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Every arr.reaper.* event the reaper emits, as Prefect would build it."""
    seen: list[Event] = []

    def record(event: str, **kwargs: Any) -> None:
        if event.startswith("arr.reaper."):
            seen.append(Event(event=event, **kwargs))

    monkeypatch.setattr(events_module, "emit_event", record)
    return seen


@pytest.mark.parametrize(
    ("dry_run", "name"),
    [
        pytest.param(False, "arr.reaper.stopped", id="stop"),
        pytest.param(True, "arr.reaper.would-stop", id="dry-run"),
    ],
)
async def test_emits_an_event_per_session_acted_on(
    emulator: Emulator, reaper_events: list[Event], dry_run: bool, name: str
) -> None:
    """Each session stopped (or, in a dry run, that would be) is an arr.reaper.* event
    about the session, related to its owner run, with the reason and dry_run."""
    session_id = await leaves_a_session_behind()
    report = await reap_orphaned_sessions(grace_minutes=0, dry_run=dry_run)
    [event] = reaper_events
    assert event.event == name
    assert event.resource.id == f"arr.session.{session_id}"
    assert event.payload["dry_run"] is dry_run
    assert event.payload["reason"] == report.decisions[0].reason
    assert f"prefect.flow-run.{report.decisions[0].owner_flow_run}" in {r.id for r in event.related}
    if dry_run:
        await reap_orphaned_sessions(grace_minutes=0)


@flow(name="my-pipeline")
async def tags_itself_then_leaves_a_session() -> str:
    """A user's flow with no tags at creation; it records its session (tagging itself at
    run time) and never stops it."""
    session = await create_session(lease=timedelta(minutes=30))
    await record_session_owner(session.id)
    return session.id


@pytest.mark.parametrize(
    "as_event",
    [pytest.param(False, id="run-id"), pytest.param(True, id="event-resource-id")],
)
async def test_triggered_reap_stops_only_that_runs_sessions(
    emulator: Emulator, as_event: bool
) -> None:
    """Given the run that ended (as the trigger passes it), the reaper stops the sessions
    that run tagged itself with at run time, and leaves another run's session alone."""
    other = await leaves_a_session_behind()
    state = await tags_itself_then_leaves_a_session(return_state=True)
    mine = await state.aresult()
    run_id = str(state.state_details.flow_run_id)
    report = await reap_orphaned_sessions(
        grace_minutes=0, owner_flow_run=f"prefect.flow-run.{run_id}" if as_event else run_id
    )
    assert report.stopped == [mine]
    assert [d.session_id for d in report.decisions] == [mine]
    assert report.decisions[0].owner_flow_run == run_id
    assert [s.id for s in emulator.running()] == [other]
    await reap_orphaned_sessions(grace_minutes=0)


async def test_triggered_reap_of_a_run_that_owned_nothing_stops_nothing(
    emulator: Emulator,
) -> None:
    """A run that owned no session (the wide trigger's common case) costs a look, no stop."""
    other = await leaves_a_session_behind()
    async with get_client() as prefect:
        run = await prefect.create_flow_run(leaves_a_session_behind, tags=["unrelated"])
    report = await reap_orphaned_sessions(grace_minutes=0, owner_flow_run=str(run.id))
    assert report.decisions == []
    assert [s.id for s in emulator.running()] == [other]
    await reap_orphaned_sessions(grace_minutes=0)


async def test_triggered_reap_waits_out_the_owners_grace(emulator: Emulator) -> None:
    """Started inside the grace it was scheduled to outlast (a worker's prefetch starts
    runs early), a triggered reap waits for it to end and then stops, instead of keeping."""
    state = await tags_itself_then_leaves_a_session(return_state=True)
    mine = await state.aresult()
    run_id = str(state.state_details.flow_run_id)
    report = await reap_orphaned_sessions(grace_minutes=0.1, owner_flow_run=run_id)
    assert report.stopped == [mine]
    assert emulator.running() == []
