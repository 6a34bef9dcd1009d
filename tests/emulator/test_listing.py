"""The session lists, kept serialized between requests, say exactly what a fresh rendering says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator.routes.v1 import v1_properties
from arr_prefect.emulator.routes.v2021 import v2021_properties
from arr_prefect.emulator.wire import json_bytes
from tests.emulator._support import ACCOUNT, KEY, START, V2021, bearer, v2021_put


@pytest.fixture(params=[3, 1000], ids=["pages-of-3", "one-page"])
def page_size(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def listing_emu(page_size: int) -> Emulator:
    return Emulator(
        {ACCOUNT: KEY},
        clock=VirtualClock(start=START + 0.123),
        seed=11,
        startup_seconds=2.5,
        capacity={"premium": 1},
        page_size=page_size,
    )


@pytest.fixture
async def listing_client(listing_emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = listing_emu.transport()
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as c:
        yield c


def _expected_v1(emu: Emulator) -> bytes:
    now = emu.clock.time()
    records = emu.state.list_active(ACCOUNT)
    return json_bytes({"sessions": [v1_properties(r, now) for r in records]})


def _expected_v2021_sessions(emu: Emulator) -> list[bytes]:
    now = emu.clock.time()
    return [json_bytes(v2021_properties(r, now)) for r in emu.state.list_active(ACCOUNT)]


async def _assert_lists_fresh(
    client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]
) -> None:
    v1 = await client.get(f"/v1/accounts/{ACCOUNT}/sessions", headers=auth)
    assert v1.status_code == 200
    assert v1.content == _expected_v1(emu)
    expected = _expected_v2021_sessions(emu)
    url: str | None = f"/accounts/{ACCOUNT}/sessions?api-version=2021-01-01"
    pages = 0
    while url is not None:
        page = await client.get(url, headers=auth)
        assert page.status_code == 200
        body: dict[str, Any] = page.json()
        url = body.get("@nextLink")
        start = pages * emu.page_size
        wanted: dict[str, Any] = {"sessions": "SESSIONS"}
        if url is not None:
            wanted["@nextLink"] = url
        sessions = b"[" + b",".join(expected[start : start + emu.page_size]) + b"]"
        assert page.content == json_bytes(wanted).replace(b'"SESSIONS"', sessions)
        pages += 1
    assert pages == max(1, -(-len(expected) // emu.page_size))


Step = Callable[[httpx.AsyncClient, Emulator, dict[str, str]], Awaitable[None]]


async def _v1_create(client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]) -> None:
    body = {"maxLeaseTime": "0:20:0", "models": [], "size": "standard"}
    answer = await client.post(f"/v1/accounts/{ACCOUNT}/sessions/create", json=body, headers=auth)
    assert answer.status_code == 202


async def _v2021_create(client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]) -> None:
    index = len(emu.sessions())
    assert (await v2021_put(client, auth, f"listed-{index}", minutes=30)).status_code == 201


async def _premium_beyond_capacity(
    client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]
) -> None:
    for index in range(2):
        answer = await v2021_put(client, auth, f"premium-{index}", size="Premium")
        assert answer.status_code == 201


async def _failing_create(client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]) -> None:
    emu.faults.add(kind="session_error", route="v2021.create", reason="GPU über ☃ gone")
    assert (await v2021_put(client, auth, "doomed")).status_code == 201


async def _extend_oldest(client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]) -> None:
    oldest = emu.state.list_active(ACCOUNT)[0]
    if oldest.api_version == "v1":
        answer = await client.patch(
            f"/v1/accounts/{ACCOUNT}/sessions/{oldest.id}",
            json={"maxLeaseTime": "0:45:0"},
            headers=auth,
        )
    else:
        answer = await client.patch(
            f"/accounts/{ACCOUNT}/sessions/{oldest.id}",
            params=V2021,
            json={"maxLeaseTimeMinutes": 45},
            headers=auth,
        )
    assert answer.status_code == 200


async def _stop_second(client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]) -> None:
    second = emu.state.list_active(ACCOUNT)[1]
    answer = await client.delete(f"/v1/accounts/{ACCOUNT}/sessions/{second.id}", headers=auth)
    assert answer.status_code == 204


def _advance(seconds: float) -> Step:
    async def advance(client: httpx.AsyncClient, emu: Emulator, auth: dict[str, str]) -> None:
        assert isinstance(emu.clock, VirtualClock)
        emu.clock.advance(seconds)

    return advance


SCRIPT: list[Step] = [
    _v1_create,
    _advance(0.3),
    _v2021_create,
    _advance(0.45),
    _v1_create,
    _v2021_create,
    _advance(2.2),  # the first ones are Ready
    _advance(0.4),
    _advance(0.4),  # elapsed seconds tick over for some, not others
    _premium_beyond_capacity,
    _failing_create,
    _advance(3.0),  # Ready, and the doomed session ends in Error (it leaves the list)
    _extend_oldest,
    _advance(59.7),  # elapsed minutes tick over
    _advance(0.35),
    _stop_second,
    _v1_create,
    *[_advance(60.0)] * 9,  # nothing but ticks; 9 -> 10 minutes makes a fragment longer
    _advance(1200.0),  # the 20-minute v1 leases run out
    _advance(0.01),
]


async def test_lists_match_a_fresh_rendering_after_every_change(
    listing_client: httpx.AsyncClient, listing_emu: Emulator
) -> None:
    """After creates, transitions, ticks, extends, stops and expiries, each list is exact."""
    auth = await bearer(listing_client)
    await _assert_lists_fresh(listing_client, listing_emu, auth)
    for step in SCRIPT:
        await step(listing_client, listing_emu, auth)
        await _assert_lists_fresh(listing_client, listing_emu, auth)
        await _assert_lists_fresh(listing_client, listing_emu, auth)  # served again, cached
    assert listing_emu.state.list_active(ACCOUNT), "the script ends with sessions listed"
