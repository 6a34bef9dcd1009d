"""The account quota (``max_sessions`` / ``arr-emulator --max-sessions``): a create beyond it
is refused with 403 ``QuotaExceeded`` and makes no session."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from arr_prefect import ArrClient
from arr_prefect.auth import TokenCache
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator.cli import build_parser, main
from arr_prefect.errors import AuthenticationError, QuotaExceededError
from arr_prefect.settings import load_settings
from tests.emulator._support import (
    ACCOUNT,
    KEY,
    MS_CV,
    OTHER_ACCOUNT,
    OTHER_KEY,
    START,
    V2021,
    bearer,
    v1_create,
    v2021_put,
)

V1 = f"/v1/accounts/{ACCOUNT}/sessions"


@pytest.fixture
def emu(clock: VirtualClock) -> Emulator:
    return Emulator({ACCOUNT: KEY, OTHER_ACCOUNT: OTHER_KEY}, clock=clock, seed=7, max_sessions=2)


async def _v1_create_response(
    client: httpx.AsyncClient, auth: dict[str, str], size: str = "standard"
) -> httpx.Response:
    return await client.post(
        f"{V1}/create", json={"maxLeaseTime": "1:0:0", "models": [], "size": size}, headers=auth
    )


async def test_v1_create_beyond_quota_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """The third v1 create of a quota of 2 gets 403 QuotaExceeded, and no session exists."""
    await v1_create(client, auth)
    await v1_create(client, auth)
    refused = await _v1_create_response(client, auth)
    assert refused.status_code == 403
    assert MS_CV.match(refused.headers["MS-CV"])
    error = refused.json()["error"]
    assert error["code"] == "QuotaExceeded"
    assert "quota of 2 active sessions" in error["message"]
    assert "Stop a session" in error["message"]
    ledger = emu.ledger()
    assert (len(ledger["sessions"]), ledger["running"]) == (2, 2)
    assert (ledger["max_sessions"], ledger["quota_refusals"]) == (2, 1)


async def test_a_stopped_or_expired_session_frees_its_place(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """Stopping a session, or its lease running out, makes room for the next create."""
    first = await v1_create(client, auth)
    await v1_create(client, auth, lease="0:1:0")
    assert (await _v1_create_response(client, auth)).status_code == 403
    await client.delete(f"{V1}/{first}", headers=auth)
    await v1_create(client, auth)
    assert (await _v1_create_response(client, auth)).status_code == 403
    clock.advance(30 + 60)  # start-up, then the one-minute lease runs out
    await v1_create(client, auth)


async def test_quota_counts_every_size_per_account(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """Standard and Premium share the quota; another account has its own."""
    assert (await _v1_create_response(client, auth, "standard")).status_code == 202
    assert (await _v1_create_response(client, auth, "premium")).status_code == 202
    assert (await _v1_create_response(client, auth, "premium")).status_code == 403
    other = await bearer(client, OTHER_ACCOUNT, OTHER_KEY)
    response = await client.post(
        f"/v1/accounts/{OTHER_ACCOUNT}/sessions/create",
        json={"maxLeaseTime": "1:0:0", "size": "standard"},
        headers=other,
    )
    assert response.status_code == 202


async def test_v2021_put_beyond_quota_is_refused_but_a_retry_is_answered(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """2021-01-01: a new ID at the quota gets 403; a same-settings PUT retry still gets 200."""
    assert (await v2021_put(client, auth, "one")).status_code == 201
    assert (await v2021_put(client, auth, "two")).status_code == 201
    refused = await v2021_put(client, auth, "three")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "QuotaExceeded"
    assert (await v2021_put(client, auth, "two")).status_code == 200
    missing = await client.get(f"/accounts/{ACCOUNT}/sessions/three", params=V2021, headers=auth)
    assert missing.status_code == 404
    assert emu.ledger()["quota_refusals"] == 1


async def test_sessions_refused_for_capacity_do_not_count(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """A session that ended in Error for lack of capacity never ran: it takes no place."""
    emu.faults.add(kind="no_capacity", route="v1.create", times=2)
    await v1_create(client, auth)
    await v1_create(client, auth)
    await v1_create(client, auth)
    await v1_create(client, auth)
    assert (await _v1_create_response(client, auth)).status_code == 403


async def test_a_refused_create_leaves_scripted_faults_alone(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """The quota is checked before a scripted create fault is used up."""
    await v1_create(client, auth)
    second = await v1_create(client, auth)
    emu.faults.add(kind="session_error", route="v1.create")
    assert (await _v1_create_response(client, auth)).status_code == 403
    await client.delete(f"{V1}/{second}", headers=auth)
    doomed = await v1_create(client, auth)
    emu.clock.advance(30)  # type: ignore[attr-defined]
    properties = await client.get(f"{V1}/{doomed}/properties", headers=auth)
    assert properties.json()["sessionStatus"] == "Error"


async def test_client_reports_the_refusal_without_retrying(
    emu: Emulator, clock: VirtualClock
) -> None:
    """With ARR_QUOTA_WAIT=0 ArrClient raises QuotaExceededError at once, with the service's
    code and message (not an AuthenticationError: the key is fine)."""
    settings = load_settings(
        _env_file=None,
        account_id=ACCOUNT,
        account_key=KEY,
        service_url="http://127.0.0.1:9",
        sts_url="http://127.0.0.1:9",
        quota_wait=0,
    )
    async with ArrClient(
        settings, transport=emu.transport(), clock=clock, token_cache=TokenCache()
    ) as arr:
        await arr.create_session(lease=timedelta(minutes=10))
        await arr.create_session(lease=timedelta(minutes=10))
        with pytest.raises(
            QuotaExceededError, match="HTTP 403 QuotaExceeded: The account has"
        ) as info:
            # Real seconds: a client that waited would spin on this test's idle clock.
            async with asyncio.timeout(10):
                await arr.create_session(lease=timedelta(minutes=10))
    assert not isinstance(info.value, AuthenticationError)
    assert emu.request_count("v1.create", 403) == 1
    assert clock.time() == START


def test_no_quota_by_default(clock: VirtualClock) -> None:
    """Without max_sessions there is no quota, and the ledger says so."""
    ledger = Emulator(clock=clock).ledger()
    assert (ledger["max_sessions"], ledger["quota_refusals"]) == (None, 0)


def test_cli_max_sessions() -> None:
    """--max-sessions parses; below 1 it is refused with a clear error."""
    assert build_parser().parse_args(["--max-sessions", "3"]).max_sessions == 3
    assert build_parser().parse_args([]).max_sessions is None
    with pytest.raises(SystemExit) as exited:
        main(["--max-sessions", "0"])
    assert exited.value.code == 2


def test_max_sessions_must_be_positive(clock: VirtualClock) -> None:
    """The facade refuses a quota below 1."""
    with pytest.raises(ValueError, match="max_sessions must be at least 1"):
        Emulator(clock=clock, max_sessions=0)
