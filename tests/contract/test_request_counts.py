"""Requests per lifecycle and per renewal: the client sends what a hand-written one would.

A lifecycle by hand is token, create, one GET per poll, PATCH, stop; the client must not
add a request to it on either API version (v1's PATCH answers 200 with an empty body, and
the client completes it from the Ready answer it already has instead of asking again).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from arr_prefect import ArrClient
from arr_prefect.auth import TokenCache
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.models import SessionStatus
from tests.contract.test_client_contract import emulator_settings

ROUTES = {
    "v1": ("v1.create", "v1.get", "v1.extend", "v1.stop"),
    "2021-01-01": ("v2021.create", "v2021.get", "v2021.extend", "v2021.stop"),
}


@pytest.fixture(params=["v1", "2021-01-01"])
def api_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(autojump=True)


@pytest.fixture
def emulator(clock: VirtualClock) -> Emulator:
    return Emulator(clock=clock, startup_seconds=0)


def fresh_client(emulator: Emulator, clock: VirtualClock, api_version: str) -> ArrClient:
    return ArrClient(
        emulator_settings(api_version),
        transport=emulator.transport(),
        clock=clock,
        token_cache=TokenCache(),
    )


def counts(emulator: Emulator) -> dict[str, int]:
    return {
        route: sum(by_status.values()) for route, by_status in emulator.request_counts().items()
    }


async def test_lifecycle_sends_the_raw_request_count(
    emulator: Emulator, clock: VirtualClock, api_version: str
) -> None:
    """token, create, one poll (start-up 0), extend, stop: five requests, none added."""
    create, get, extend, stop = ROUTES[api_version]
    async with fresh_client(emulator, clock, api_version) as arr:
        session = await arr.create_session(lease=timedelta(minutes=10))
        ready = await arr.wait_until_ready(session.id)
        extended = await arr.extend_session(session.id, timedelta(minutes=30))
        assert await arr.stop_session(session.id)
    assert counts(emulator) == {"sts.token": 1, create: 1, get: 1, extend: 1, stop: 1}
    assert (extended.status, extended.max_lease) == (SessionStatus.READY, timedelta(minutes=30))
    assert extended.hostname == ready.hostname
    assert emulator.running() == []


async def test_a_renewal_is_one_get_and_one_patch(
    emulator: Emulator, clock: VirtualClock, api_version: str
) -> None:
    """extend_session_by (the lease keeper's renewal) reads elapsed once, then patches."""
    _, get, extend, _ = ROUTES[api_version]
    async with fresh_client(emulator, clock, api_version) as arr:
        session = await arr.create_session(lease=timedelta(minutes=10))
        await arr.wait_until_ready(session.id)
        await clock.sleep(300)
        before = Counter(counts(emulator))
        renewed = await arr.extend_session_by(session.id, timedelta(minutes=10))
        assert Counter(counts(emulator)) - before == {get: 1, extend: 1}
        await arr.stop_session(session.id)
    assert renewed.max_lease is not None
    assert renewed.max_lease >= timedelta(minutes=15)
    record = emulator.sessions()[0]
    assert record.extend_history[-1].max_lease == renewed.max_lease


async def test_v1_extend_reads_back_only_what_it_cannot_know(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """A v1 extend asks again when the client never saw the session Ready, or the new lease
    may not exceed the time already elapsed (the PATCH may then have ended the session)."""
    async with fresh_client(emulator, clock, "v1") as arr:
        session = await arr.create_session(lease=timedelta(minutes=10))
        await arr.wait_until_ready(session.id)
        await clock.sleep(300)
    async with fresh_client(emulator, clock, "v1") as other:  # never saw it
        before = counts(emulator)["v1.get"]
        extended = await other.extend_session(session.id, timedelta(minutes=30))
        assert counts(emulator)["v1.get"] == before + 1
        assert extended.status == SessionStatus.READY
        short = await other.extend_session(session.id, timedelta(minutes=5, seconds=30))
        assert counts(emulator)["v1.get"] == before + 2
        assert short.status == SessionStatus.READY
        ended = await other.extend_session(session.id, timedelta(minutes=4))
        assert ended.status == SessionStatus.EXPIRED
    assert emulator.running() == []
