"""rendering_session and LeaseKeeper: the teardown guarantees a composing pipeline relies on.

Each test guards one behaviour that was once removable without any test noticing; the
emulator runs in-process on the virtual clock, so hours of lease take no real time.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from arr_prefect.client import ArrClient, open_client
from arr_prefect.clock import VirtualClock
from arr_prefect.dialects import dialect_for
from arr_prefect.emulator import Emulator
from arr_prefect.errors import ArrTransportError, InvalidLeaseError
from arr_prefect.flows import LeaseKeeper, rendering_session
from arr_prefect.models import Session, SessionSize

pytestmark = pytest.mark.usefixtures("arr")

EXTEND_ROUTE = {"v1": "v1.extend", "2021-01-01": "v2021.extend"}


def statuses(emulator: Emulator) -> list[tuple[str, str | None]]:
    return [(e["status"], e["end_reason"]) for e in emulator.ledger()["sessions"]]


async def test_cancel_while_the_create_answer_is_in_flight(
    emulator: Emulator, api_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel landing after the service made the session but before its answer arrived
    ends in CancelledError, never runs the body, and leaves nothing running."""
    created, release = asyncio.Event(), asyncio.Event()
    # The answer is held inside the create's attempt (the dialect's request), the part the
    # shield covers: the client's waits for the quota between attempts are not shielded.
    dialect = type(dialect_for(api_version))
    original = dialect.create

    async def slow_answer(self: Any, calls: Any, **kwargs: Any) -> Session:
        session = await original(self, calls, **kwargs)  # the service has made it...
        created.set()
        await release.wait()  # ...and its answer is still on the wire
        return session

    monkeypatch.setattr(dialect, "create", slow_answer)
    body_ran: list[bool] = []

    async def pipeline() -> None:
        async with rendering_session(lease=timedelta(minutes=5)):
            body_ran.append(True)

    task = asyncio.create_task(pipeline())
    await created.wait()
    task.cancel()  # Ctrl-C, a TaskGroup sibling failing, a pipeline's own cancel
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body_ran == []
    assert statuses(emulator) == [("Stopped", "stopped")]


@pytest.mark.parametrize("api_version", ["2021-01-01"], indirect=True)
async def test_2021_create_that_raised_after_the_put_landed_is_stopped(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service made the session under our chosen ID but the call raised (answer lost):
    the error surfaces and that ID is stopped, not left running."""
    original = ArrClient.create_session

    async def answer_lost(self: ArrClient, **kwargs: Any) -> Session:
        await original(self, **kwargs)
        raise ArrTransportError(
            "create session: the connection dropped before the answer",
            operation="create session",
            method="PUT",
            url="http://127.0.0.1:9/accounts/x/sessions/y",
        )

    monkeypatch.setattr(ArrClient, "create_session", answer_lost)
    with pytest.raises(ArrTransportError, match="dropped"):
        async with rendering_session(lease=timedelta(minutes=5)):
            pytest.fail("the body must not run without a session")
    [entry] = emulator.ledger()["sessions"]
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped")


async def test_keeper_retries_after_a_renewal_failed_past_the_client_retries(
    emulator: Emulator, api_version: str, clock: VirtualClock
) -> None:
    """A renewal that fails even after the client's retries is tried again soon: the lease
    stays alive for many lease periods."""
    lease = timedelta(minutes=4)
    async with open_client() as arr:
        session = await arr.create_session(lease=lease, size=SessionSize.STANDARD)
        session = await arr.wait_until_ready(session.id)
        # Every attempt of the first renewal fails (the service is down for a while).
        emulator.faults.add(
            "server_error", EXTEND_ROUTE[api_version], times=arr.settings.max_attempts
        )
        keeper = LeaseKeeper(arr, session.id, lease=lease)
        async with keeper:
            keeper.start(session.max_lease)
            await clock.sleep(10 * lease.total_seconds())
            after = await arr.get_session(session.id)
        assert after.status == "Ready", statuses(emulator)
        assert keeper.failures == 1
        assert keeper.renewals >= 15
        assert keeper.lost is None
        await arr.stop_session(session.id)


async def test_no_lease_keeper_outlives_the_block(emulator: Emulator) -> None:
    """When the block ends (normally or not), its keeper task is gone too."""

    def keepers() -> list[str]:
        return [
            t.get_name()
            for t in asyncio.all_tasks()
            if t.get_name().startswith("lease-keeper-") and not t.done()
        ]

    async with rendering_session(lease=timedelta(minutes=4)) as session:
        assert keepers() == [f"lease-keeper-{session.id}"]
    assert keepers() == []
    with pytest.raises(RuntimeError, match="job failed"):
        async with rendering_session(lease=timedelta(minutes=4)):
            raise RuntimeError("job failed")
    assert keepers() == []
    assert [e["status"] for e in emulator.ledger()["sessions"]] == ["Stopped", "Stopped"]


@pytest.mark.parametrize(
    "renew_every",
    [
        pytest.param(timedelta(minutes=4), id="equal-to-lease"),
        pytest.param(timedelta(minutes=9), id="longer-than-lease"),
        pytest.param(timedelta(0), id="zero"),
        pytest.param(timedelta(minutes=-1), id="negative"),
    ],
)
async def test_renew_every_out_of_bounds_is_refused_before_any_session(
    emulator: Emulator, renew_every: timedelta
) -> None:
    """renew_every must be positive and shorter than the lease: refused, nothing created."""
    with pytest.raises(InvalidLeaseError, match="renew_every"):
        async with rendering_session(lease=timedelta(minutes=4), renew_every=renew_every):
            pytest.fail("the body must not run")
    async with open_client() as arr:
        with pytest.raises(InvalidLeaseError, match="renew_every"):
            LeaseKeeper(arr, "any-session", lease=timedelta(minutes=4), renew_every=renew_every)
    assert emulator.ledger()["sessions"] == []


async def test_guard_only_where_another_process_can_reach_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No guard outside a worker-started flow run, nor for an in-process (injected) service."""
    from arr_prefect.flows import stopped_if_process_dies, worker_watchdog

    async with open_client() as arr:
        monkeypatch.setattr(worker_watchdog, "WORKER_PID", None)
        assert stopped_if_process_dies._guard_for(arr) is None
        monkeypatch.setattr(worker_watchdog, "WORKER_PID", 1234)
        assert not arr.reaches_service_directly
        assert stopped_if_process_dies._guard_for(arr) is None
