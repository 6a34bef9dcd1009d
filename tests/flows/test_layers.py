"""Layers of rendering_session that no other fast test would miss if they were left out:
the API called through task runs in a flow run, and the hand-off to the session guard."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from arr_prefect.emulator import Emulator
from arr_prefect.flows import rendering_session, stopped_if_process_dies
from arr_prefect.settings import ArrSettings

pytestmark = pytest.mark.usefixtures("arr")


async def test_in_a_flow_run_each_step_is_a_task_run(emulator: Emulator, api_version: str) -> None:
    """Create, wait and stop show in the run as create-session, wait-until-ready and
    stop-session task runs (the size in lower case however it was spelled)."""

    @flow
    async def pipeline() -> str:
        async with rendering_session("PREMIUM", lease=timedelta(minutes=4)) as session:
            return session.id

    state = await pipeline(return_state=True)
    session_id = await state.aresult()
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    expected = {
        f"wait-until-ready-{session_id}",
        f"stop-session-{session_id}",
        "create-session-premium",
    }
    # The server records task runs from their events, a moment after the flow returns:
    # read until all three are there, for at most 15 s of real time.
    deadline = time.monotonic() + 15
    names: set[str] = set()
    while True:
        async with get_client() as prefect:
            runs = await prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        names = {run.name for run in runs}
        if expected <= names or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert expected <= names, names


class FakeGuard:
    """Records what the flow-run side tells the guard, with what the service knew then."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.calls: list[tuple[str, str, list[str]]] = []
        self.leases: list[tuple[timedelta, str]] = []
        """The lease and size of each create the guard was told is in flight."""
        self.created: list[str | None] = []
        """What each watch said of the create that answered with its ID."""

    def statuses(self) -> list[str]:
        return [entry["status"] for entry in self.emulator.ledger()["sessions"]]

    def watch(self, session_id: str, settings: ArrSettings, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("watch", session_id, self.statuses()))
        self.created.append(kwargs.get("created"))

    def release(self, session_id: str) -> None:
        self.calls.append(("release", session_id, self.statuses()))

    def creating(self, key: str, lease: timedelta, size: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("creating", key, self.statuses()))
        self.leases.append((lease, size))

    def create_failed(self, key: str) -> None:
        self.calls.append(("create_failed", key, self.statuses()))


# When the guard is told of the session, what the service has made: 2021-01-01 names the
# session in the client (watched before the create), v1 in the service (once created).
WATCHED_WHEN = {"2021-01-01": [], "v1": ["Starting"]}


async def test_the_guard_holds_the_session_from_its_id_to_its_stop(
    emulator: Emulator, api_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard is told of the session as soon as its ID is known (before the create
    when the client names it) and lets go of it once teardown has stopped it."""
    guard = FakeGuard(emulator)
    monkeypatch.setattr(stopped_if_process_dies, "_guard_for", lambda arr: guard)
    async with rendering_session(lease=timedelta(minutes=4)) as session:
        watched = [call[:2] for call in guard.calls if call[0] != "creating"]
        assert watched == [("watch", session.id)]
    held = [call for call in guard.calls if call[0] != "creating"]
    assert held == [
        ("watch", session.id, WATCHED_WHEN[api_version]),
        ("release", session.id, ["Stopped"]),
    ]


async def test_v1_create_is_known_to_the_guard_before_it_is_sent(
    emulator: Emulator, api_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the service names the session (v1), the guard is told the create is in flight
    before the service has made anything, with the very lease (fingerprint and all) the
    session gets, and told again with its ID when the answer comes; 2021-01-01 names the
    session first, so nothing is in flight."""
    guard = FakeGuard(emulator)
    monkeypatch.setattr(stopped_if_process_dies, "_guard_for", lambda arr: guard)
    async with rendering_session(lease=timedelta(minutes=4), size="premium") as session:
        pass
    if api_version == "2021-01-01":
        assert [call[0] for call in guard.calls] == ["watch", "release"]
        assert guard.leases == []
        return
    [(_, key, made_then), (watch, session_id, _), _] = guard.calls
    assert (made_then, watch, session_id) == ([], "watch", session.id)
    assert guard.created == [key]
    [(lease, size)] = guard.leases
    assert size == "Premium"
    [record] = emulator.sessions()
    assert record.max_lease == lease
    assert lease.microseconds > 0
    assert lease - timedelta(microseconds=lease.microseconds) == timedelta(minutes=4)
