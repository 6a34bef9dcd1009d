"""reap_orphaned_sessions: stops what our finished or vanished flow runs left, nothing else."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from arr_prefect.client import open_client
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
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
