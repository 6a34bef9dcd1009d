"""Contract tests: the real client against the emulator, in-process and over loopback HTTP.

Each test ends with the emulator's ledger showing nothing running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from arr_prefect import ArrClient, SessionStatus
from arr_prefect.auth import TokenCache
from arr_prefect.clock import ScaledClock, VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.errors import LeaseNotExtendedError, SessionNotFoundError
from arr_prefect.settings import ArrSettings, load_settings
from tests.emulator.test_serving import running_emulator

CREATE = {"v1": "v1.create", "2021-01-01": "v2021.create"}
GET = {"v1": "v1.get", "2021-01-01": "v2021.get"}


@pytest.fixture(params=["v1", "2021-01-01"])
def api_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(autojump=True)


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[Emulator]:
    emu = Emulator(clock=clock, startup_seconds=45, page_size=2)
    yield emu
    assert emu.running() == [], "a session was left running"


def emulator_settings(
    api_version: str, url: str = "http://127.0.0.1:9", **overrides: Any
) -> ArrSettings:
    """Settings for the emulator's default account (the URL is not dialled in-process)."""
    return load_settings(
        _env_file=None,
        account_id=DEFAULT_ACCOUNT_ID,
        account_key=DEFAULT_ACCOUNT_KEY,
        service_url=url,
        sts_url=url,
        api_version=api_version,
        **overrides,
    )


@pytest.fixture
async def arr(
    emulator: Emulator, clock: VirtualClock, api_version: str
) -> AsyncIterator[ArrClient]:
    settings = emulator_settings(api_version)
    async with ArrClient(
        settings, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
    ) as client:
        yield client


async def test_full_lifecycle(arr: ArrClient, emulator: Emulator) -> None:
    """token → create → wait → extend → extend_by → list → stop → Stopped, as the ledger saw."""
    token = await arr.get_access_token()
    assert token.expires_at is not None
    session = await arr.create_session(lease=timedelta(minutes=15), size="premium")
    assert session.status == SessionStatus.STARTING
    changes: list[tuple[SessionStatus | None, SessionStatus]] = []
    ready = await arr.wait_until_ready(
        session.id, on_status=lambda old, s: changes.append((old, s.status))
    )
    assert changes == [
        (None, SessionStatus.STARTING),
        (SessionStatus.STARTING, SessionStatus.READY),
    ]
    assert ready.hostname
    assert ready.handshake_port is not None
    assert 49152 <= ready.handshake_port <= 65534
    extended = await arr.extend_session(session.id, timedelta(minutes=20))
    assert extended.max_lease is not None
    assert extended.max_lease >= timedelta(minutes=20)
    rolled = await arr.extend_session_by(session.id, timedelta(hours=1))
    assert rolled.max_lease is not None
    assert rolled.max_lease >= timedelta(hours=1)
    assert [s.id for s in await arr.list_sessions()] == [session.id]
    assert await arr.stop_session(session.id) is True
    stopped = await arr.get_session(session.id)
    assert stopped.status == SessionStatus.STOPPED
    [entry] = emulator.ledger()["sessions"]
    assert (entry["id"], entry["status"], entry["size"]) == (session.id, "Stopped", "Premium")
    assert entry["extend_count"] == 2


async def test_list_follows_pages(arr: ArrClient, emulator: Emulator) -> None:
    """Five sessions on pages of two are all listed (2021-01-01 pages with @nextLink)."""
    created = {(await arr.create_session(lease=30)).id for _ in range(5)}
    assert {s.id for s in await arr.list_sessions()} == created
    for session_id in created:
        await arr.stop_session(session_id)
    assert await arr.list_sessions() == []


async def test_stop_is_idempotent_and_unknown_is_fine(arr: ArrClient, emulator: Emulator) -> None:
    """Stopping twice, or an unknown session, is not an error."""
    session = await arr.create_session(lease=30)
    await arr.stop_session(session.id)
    await arr.stop_session(session.id)
    assert await arr.stop_session("no-such-session") is False
    with pytest.raises(SessionNotFoundError):
        await arr.get_session("no-such-session")


async def test_retries_through_faults(arr: ArrClient, emulator: Emulator, api_version: str) -> None:
    """429 with Retry-After, 5xx and a dropped connection are retried to success."""
    session = await arr.create_session(lease=30)
    emulator.faults.add("throttle", GET[api_version], retry_after=7)
    emulator.faults.add("server_error", GET[api_version], status=503)
    emulator.faults.add("drop", GET[api_version])
    before = emulator.clock.time()
    assert (await arr.get_session(session.id)).id == session.id
    assert emulator.clock.time() - before >= 7
    assert emulator.request_count(GET[api_version]) == 4
    await arr.stop_session(session.id)


async def test_lost_create_leaves_exactly_one_session(
    arr: ArrClient, emulator: Emulator, api_version: str
) -> None:
    """A create whose answer is lost is reconciled: one session, the one returned."""
    emulator.faults.add("lost_create", CREATE[api_version])
    session = await arr.create_session(lease=30)
    ids = [s["id"] for s in emulator.ledger()["sessions"]]
    assert ids == [session.id]
    await arr.stop_session(session.id)


async def test_token_expiry_mid_run_is_refreshed(arr: ArrClient, emulator: Emulator) -> None:
    """Tokens revoked mid-run: the next call refreshes once and succeeds."""
    session = await arr.create_session(lease=30)
    emulator.expire_tokens()
    assert (await arr.get_session(session.id)).id == session.id
    assert emulator.request_count("sts.token") == 2
    await arr.stop_session(session.id)


async def test_2021_lease_must_grow(emulator: Emulator, clock: VirtualClock) -> None:
    """2021-01-01 refuses a lease not above the current one with 422, as the client reports."""
    settings = emulator_settings("2021-01-01")
    async with ArrClient(
        settings, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
    ) as arr:
        session = await arr.create_session(lease=30)
        with pytest.raises(LeaseNotExtendedError) as info:
            await arr.extend_session(session.id, 10)
        assert info.value.status_code == 422
        await arr.stop_session(session.id)


@pytest.mark.loopback
async def test_lifecycle_over_loopback_against_the_cli(api_version: str) -> None:
    """The client drives a whole lifecycle against `arr-emulator` over real HTTP."""
    with running_emulator("--startup-seconds", "30", "--time-scale", "60") as (process, url):
        settings = emulator_settings(api_version, url, poll_interval=5)
        async with ArrClient(settings, clock=ScaledClock(60), token_cache=TokenCache()) as arr:
            session = await arr.create_session(lease=20)
            ready = await arr.wait_until_ready(session.id, timeout=600)
            assert ready.status == SessionStatus.READY
            await arr.extend_session_by(session.id, 30)
            await arr.stop_session(session.id)
        async with httpx.AsyncClient() as http:
            ledger = (await http.get(f"{url}/_emulator/ledger")).json()
        assert ledger["running"] == 0
        assert [s["status"] for s in ledger["sessions"]] == ["Stopped"]
        process.terminate()
        assert process.wait(10) == 0
