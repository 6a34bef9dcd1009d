"""Fault injection, scripted and random, through the HTTP app."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import EmulatedConnectionDrop, Emulator
from arr_prefect.emulator.faults import FaultController, RandomFaults
from tests.emulator._support import (
    ACCOUNT,
    KEY,
    MS_CV,
    START,
    V1_CREATE_BODY,
    V2021,
    bearer,
    v1_create,
    v2021_put,
)

V1 = f"/v1/accounts/{ACCOUNT}/sessions"


async def test_throttle_answers_429_with_retry_after(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """A throttle fault answers 429 TooManyRequests with Retry-After, `times` times."""
    emu.faults.add(kind="throttle", route="v1.list", times=2, retry_after=3)
    statuses = []
    for _ in range(3):
        response = await client.get(V1, headers=auth)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "3"
            assert response.json()["error"]["code"] == "TooManyRequests"
            assert MS_CV.match(response.headers["MS-CV"])
    assert statuses == [429, 429, 200]
    assert emu.request_counts()["v1.list"] == {"200": 1, "429": 2}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(500, "InternalServerError", id="500"),
        pytest.param(502, "BadGateway", id="502"),
        pytest.param(503, "ServiceUnavailable", id="503"),
    ],
)
async def test_server_error(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, status: int, code: str
) -> None:
    """A server_error fault answers the chosen 5xx with an error body."""
    emu.faults.add(kind="server_error", route="v1.list", status=status)
    response = await client.get(V1, headers=auth)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_slow_delays_on_the_emulators_clock(emu: Emulator) -> None:
    """A slow fault answers after `seconds` of the emulator's clock."""
    clock = VirtualClock(start=START, autojump=True)
    emu = Emulator({ACCOUNT: KEY}, clock=clock)
    emu.faults.add(kind="slow", route="v1.list", seconds=7)
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as client:
        auth = await bearer(client)
        response = await client.get(V1, headers=auth)
    assert response.status_code == 200
    assert clock.time() == START + 7


async def test_drop_breaks_the_connection(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """A drop fault reaches the client as an httpx.TransportError."""
    emu.faults.add(kind="drop", route="v1.list")
    with pytest.raises(httpx.TransportError) as info:
        await client.get(V1, headers=auth)
    assert isinstance(info.value, EmulatedConnectionDrop)
    assert emu.request_counts()["v1.list"] == {"dropped": 1}
    assert (await client.get(V1, headers=auth)).status_code == 200


async def test_lost_v1_create_still_makes_the_session(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """lost_create: the session exists (and bills) though the client saw a broken connection."""
    emu.faults.add(kind="lost_create", route="v1.create")
    with pytest.raises(httpx.TransportError):
        await client.post(f"{V1}/create", json=V1_CREATE_BODY, headers=auth)
    [entry] = emu.ledger()["sessions"]
    assert entry["status"] == "Starting"
    listed = (await client.get(V1, headers=auth)).json()["sessions"]
    assert [s["sessionId"] for s in listed] == [entry["id"]]


async def _held(answer: asyncio.Task[httpx.Response], emu: Emulator) -> str:
    """The ID of the session a held create made (yielding until it is made)."""
    for _ in range(200):
        sessions = emu.ledger()["sessions"]
        if sessions:
            assert not answer.done()
            [entry] = sessions
            assert isinstance(entry["id"], str)
            return entry["id"]
        await asyncio.sleep(0)
    raise AssertionError("the create made no session")


@pytest.mark.parametrize(
    ("route", "api_version"),
    [pytest.param("v1.create", "v1", id="v1"), pytest.param("v2021.create", "2021", id="2021")],
)
async def test_slow_create_makes_the_session_then_holds_the_answer(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    emu: Emulator,
    clock: VirtualClock,
    route: str,
    api_version: str,
) -> None:
    """slow_create: the session runs and is listed at once; the answer that names it comes
    `seconds` later on the emulator's clock (a client that dies meanwhile never learns it)."""
    emu.faults.add(kind="slow_create", route=route, seconds=40)
    if api_version == "v1":
        sent = client.post(f"{V1}/create", json=V1_CREATE_BODY, headers=auth)
        path, params = V1, {}
    else:
        sent = v2021_put(client, auth, "held")
        path, params = f"/accounts/{ACCOUNT}/sessions", V2021
    answer = asyncio.create_task(sent)
    session_id = await _held(answer, emu)
    listed = (await client.get(path, params=params, headers=auth)).json()["sessions"]
    assert [s.get("sessionId", s.get("id")) for s in listed] == [session_id]
    assert emu.ledger()["sessions"][0]["status"] == "Starting"
    clock.advance(39.9)
    for _ in range(50):
        await asyncio.sleep(0)
    assert not answer.done()
    clock.advance(0.1)
    response = await answer
    assert response.status_code in (201, 202), response.text
    body = response.json()
    assert body.get("sessionId", body.get("id")) == session_id
    assert [f.action.kind for f in emu.faults.applied] == ["slow_create"]


async def test_lost_2021_create_is_recovered_by_a_retry(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """A 2021-01-01 PUT retried after a lost answer gets 200 and no second session."""
    emu.faults.add(kind="lost_create")
    with pytest.raises(httpx.TransportError):
        await v2021_put(client, auth, "s")
    assert (await v2021_put(client, auth, "s")).status_code == 200
    assert len(emu.ledger()["sessions"]) == 1


async def test_session_error_at_startup(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, clock: VirtualClock
) -> None:
    """session_error: the session ends in Error when start-up completes, with the reason."""
    emu.faults.add(kind="session_error", reason="GPU on fire")
    sid = await v1_create(client, auth)
    clock.advance(30)
    props = (await client.get(f"{V1}/{sid}/properties", headers=auth)).json()
    assert props["sessionStatus"] == "Error"
    assert props["message"] == "The session failed to start: GPU on fire"


async def test_no_capacity(client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator) -> None:
    """no_capacity: the PUT succeeds, the next GET shows Error with the capacity message."""
    emu.faults.add(kind="no_capacity", route="v2021.create")
    assert (await v2021_put(client, auth, "s")).status_code == 201
    body = (await client.get(f"/accounts/{ACCOUNT}/sessions/s", params=V2021, headers=auth)).json()
    assert body["status"] == "Error"
    assert body["error"] == {
        "code": "InsufficientCapacity",
        "message": "No capacity available for size Standard in region westus2.",
    }


async def test_configured_capacity(clock: VirtualClock) -> None:
    """A configured per-size limit refuses the session beyond it."""
    emu = Emulator({ACCOUNT: KEY}, clock=clock, capacity={"premium": 1})
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as client:
        auth = await bearer(client)
        await v2021_put(client, auth, "a", size="Premium")
        await v2021_put(client, auth, "b", size="Premium")
    assert [(e["id"], e["status"]) for e in emu.ledger()["sessions"]] == [
        ("a", "Starting"),
        ("b", "Error"),
    ]
    assert emu.ledger()["running"] == 1


async def test_session_id_filter_and_skip(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """A fault can target one session id, and let `skip` matching requests through first."""
    await v2021_put(client, auth, "a")
    await v2021_put(client, auth, "b")
    emu.faults.add(kind="throttle", route="v2021.get", session_id="b", skip=1)

    async def get(sid: str) -> int:
        return (
            await client.get(f"/accounts/{ACCOUNT}/sessions/{sid}", params=V2021, headers=auth)
        ).status_code

    assert [await get("a"), await get("b"), await get("a"), await get("b"), await get("b")] == [
        200,
        200,
        200,
        429,
        200,
    ]


async def test_unnamed_route_spares_the_sts(client: httpx.AsyncClient, emu: Emulator) -> None:
    """route=None matches session API routes only; the STS must be named."""
    emu.faults.add(kind="server_error")
    auth = await bearer(client)
    assert (await client.get(V1, headers=auth)).status_code == 503
    emu.faults.add(kind="throttle", route="sts.token")
    sts = await client.get(
        f"/accounts/{ACCOUNT}/token", headers={"Authorization": f"Bearer {ACCOUNT}:{KEY}"}
    )
    assert sts.status_code == 429


async def _statuses(seed: int, clock: VirtualClock) -> list[int | str]:
    emu = Emulator({ACCOUNT: KEY}, clock=clock, seed=seed)
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as client:
        auth = await bearer(client)
        emu.faults.set_random(p_throttle=0.3, p_server_error=0.2, p_drop=0.1, seed=seed)
        seen: list[int | str] = []
        for _ in range(40):
            try:
                seen.append((await client.get(V1, headers=auth)).status_code)
            except httpx.TransportError:
                seen.append("dropped")
            assert (await client.get("/_emulator/health")).status_code == 200
    return seen


async def test_random_faults_are_reproducible_with_a_seed(clock: VirtualClock) -> None:
    """The same seed and requests give the same faults; admin routes are never faulted."""
    first, again, other = (
        await _statuses(5, clock),
        await _statuses(5, clock),
        await _statuses(6, clock),
    )
    assert first == again
    assert first != other
    assert {200, 429, "dropped"} <= set(first)
    assert any(isinstance(s, int) and s >= 500 for s in first)


def test_random_probabilities_are_validated() -> None:
    """Probabilities outside [0, 1] or summing above 1 are refused."""
    faults = FaultController()
    with pytest.raises(ValueError, match="between 0 and 1"):
        faults.set_random(p_throttle=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        faults.set_random(p_throttle=0.6, p_drop=0.6)
    with pytest.raises(ValueError, match="unknown fault kind"):
        faults.add(kind="meteor")


async def test_admin_api_configures_faults(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """POST/GET/DELETE /_emulator/faults add, show and clear faults."""
    added = await client.post(
        "/_emulator/faults",
        json={
            "scripted": [{"kind": "throttle", "route": "v1.*", "times": 1, "retry_after": 9}],
            "random": {"p_slow": 0.0},
        },
    )
    assert added.status_code == 200
    assert added.json()["scripted"][0]["retry_after"] == 9
    assert (await client.get("/_emulator/faults")).json()["scripted"][0]["route"] == "v1.*"
    assert (await client.get(V1, headers=auth)).headers["Retry-After"] == "9"
    await client.post("/_emulator/faults", json={"kind": "server_error", "route": "v1.list"})
    assert (await client.delete("/_emulator/faults")).status_code == 204
    assert (await client.get(V1, headers=auth)).status_code == 200
    bad = await client.post("/_emulator/faults", json={"kind": "meteor"})
    assert bad.status_code == 400


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(RandomFaults) if f.name.startswith("p_")]
)
def test_any_probability_enables_random_faults(name: str) -> None:
    """Each p_* field alone turns random faults on (checked per request, without asdict)."""
    faults = RandomFaults()
    assert not faults.enabled
    setattr(faults, name, 0.5)
    assert faults.enabled
