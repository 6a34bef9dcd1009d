"""The 2021-01-01 session API over HTTP (in-process), with the service's exact answers."""

from __future__ import annotations

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from tests.emulator._support import ACCOUNT, KEY, MS_CV, V2021, bearer, v2021_put

BASE = f"/accounts/{ACCOUNT}/sessions"


async def test_recorded_exchange(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """PUT 201 Starting, GET Ready (host, ports, teraflops), PATCH 200, list, :stop 204."""
    created = await v2021_put(client, auth, "my-session")
    assert created.status_code == 201
    assert created.json() == {
        "id": "my-session",
        "creationTime": "2023-11-14T22:13:20.0000000+00:00",
        "size": "Standard",
        "status": "Starting",
        "maxLeaseTimeMinutes": 15,
        "elapsedTimeMinutes": 0,
    }
    clock.advance(30 + 119)
    ready = await client.get(f"{BASE}/my-session", params=V2021, headers=auth)
    body = ready.json()
    assert (ready.status_code, body["status"], body["elapsedTimeMinutes"]) == (200, "Ready", 1)
    assert body["teraflops"] == 8.1
    assert body["hostname"].endswith(".remoterenderingvm.westus2.mixedreality.azure.com")
    assert 49152 <= body["handshakePort"] <= 65534
    assert 49152 <= body["arrInspectorPort"] <= 65534

    patched = await client.patch(
        f"{BASE}/my-session", params=V2021, json={"maxLeaseTimeMinutes": 20}, headers=auth
    )
    assert patched.status_code == 200
    assert patched.json() == {**body, "maxLeaseTimeMinutes": 20}

    listed = await client.get(BASE, params=V2021, headers=auth)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["sessions"]] == ["my-session"]
    assert listed.json().get("@nextLink") is None

    stopped = await client.post(f"{BASE}/my-session/:stop", params=V2021, headers=auth)
    assert (stopped.status_code, stopped.content) == (204, b"")
    after = await client.get(f"{BASE}/my-session", params=V2021, headers=auth)
    assert after.json() == {
        key: value
        for key, value in body.items()
        if key not in ("hostname", "handshakePort", "arrInspectorPort")
    } | {"status": "Stopped", "maxLeaseTimeMinutes": 20}
    assert (await client.get(BASE, params=V2021, headers=auth)).json()["sessions"] == []
    for response in (created, ready, patched, listed, stopped, after):
        assert MS_CV.match(response.headers["MS-CV"])


async def test_put_retry_and_conflict(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """Same settings answer 200 with the session; other settings 409."""
    assert (await v2021_put(client, auth, "s1")).status_code == 201
    retry = await v2021_put(client, auth, "s1", size="standard")
    assert (retry.status_code, retry.json()["id"]) == (200, "s1")
    conflict = await v2021_put(client, auth, "s1", minutes=30)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "Conflict"
    assert len(emu.ledger()["sessions"]) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"maxLeaseTimeMinutes": -4, "size": "Standard"},
            "The maxLeaseTimeMinutes value cannot be negative.",
            id="negative",
        ),
        pytest.param(
            {"maxLeaseTimeMinutes": 1441, "size": "Standard"},
            "The maxLeaseTimeMinutes value cannot be greater than 1440.",
            id="over-1440",
        ),
        pytest.param({"maxLeaseTimeMinutes": "15", "size": "Standard"}, None, id="string-minutes"),
        pytest.param({"maxLeaseTimeMinutes": 15, "size": "Huge"}, None, id="unknown-size"),
        pytest.param({"size": "Standard"}, None, id="missing-minutes"),
    ],
)
async def test_create_validation(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, object], message: str | None
) -> None:
    """Invalid PUT bodies answer 400 BadRequest (the recorded message for -4)."""
    response = await client.put(f"{BASE}/s", params=V2021, json=body, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    if message is not None:
        assert response.json() == {"error": {"code": "BadRequest", "message": message}}


async def test_zero_minute_lease_is_accepted(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """0 minutes is a valid create; the session expires as soon as it is Ready."""
    assert (await v2021_put(client, auth, "zero", minutes=0)).status_code == 201
    clock.advance(30)
    body = (await client.get(f"{BASE}/zero", params=V2021, headers=auth)).json()
    assert body["status"] == "Expired"
    assert body["error"] == {"code": "LeaseExpired", "message": "The session's lease expired."}


@pytest.mark.parametrize(
    "session_id",
    [
        pytest.param("a" * 257, id="too-long"),
        pytest.param("has.dot", id="dot"),
        pytest.param("sp%20ace", id="space"),
    ],
)
async def test_invalid_session_id(
    client: httpx.AsyncClient, auth: dict[str, str], session_id: str
) -> None:
    """Ids must be 1-256 letters, digits, '-' or '_'."""
    response = await v2021_put(client, auth, session_id)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({}, "MissingApiVersionParameter", id="missing"),
        pytest.param({"api-version": "2019-02-28"}, "UnsupportedApiVersion", id="other"),
    ],
)
async def test_api_version_is_required(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str], code: str
) -> None:
    """Every 2021-01-01 call needs ?api-version=2021-01-01."""
    response = await client.get(BASE, params=params, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert "api-version" in response.json()["error"]["message"]


async def test_patch_must_grow_the_lease(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """PATCH with a lease not above the current one answers 422."""
    await v2021_put(client, auth, "s")
    response = await client.patch(
        f"{BASE}/s", params=V2021, json={"maxLeaseTimeMinutes": 15}, headers=auth
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "UnprocessableEntity"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        pytest.param("GET", "", id="get"),
        pytest.param("PATCH", "", id="update"),
        pytest.param("POST", "/:stop", id="stop"),
    ],
)
async def test_unknown_session_is_404(
    client: httpx.AsyncClient, auth: dict[str, str], method: str, suffix: str
) -> None:
    """Operations on an unknown id answer 404 NotFound."""
    response = await client.request(
        method,
        f"{BASE}/ghost{suffix}",
        params=V2021,
        json={"maxLeaseTimeMinutes": 30},
        headers=auth,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


async def test_premium_reports_more_teraflops(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """A Ready Premium session reports 16.2 teraflops."""
    await v2021_put(client, auth, "p", size="Premium")
    clock.advance(30)
    body = (await client.get(f"{BASE}/p", params=V2021, headers=auth)).json()
    assert (body["size"], body["teraflops"]) == ("Premium", 16.2)


async def test_list_pages_with_absolute_next_link(clock: VirtualClock) -> None:
    """The list pages by page_size; @nextLink is absolute and absent on the last page."""
    emu = Emulator({ACCOUNT: KEY}, clock=clock, page_size=2)
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as client:
        auth = await bearer(client)
        for n in range(5):
            await v2021_put(client, auth, f"s{n}")
            clock.advance(1)
        first = (await client.get(BASE, params=V2021, headers=auth)).json()
        assert [s["id"] for s in first["sessions"]] == ["s0", "s1"]
        assert first["@nextLink"].startswith(f"http://emulator{BASE}?")
        # A session of the first page ending between pages must not shift the next one.
        await client.post(f"{BASE}/s0/:stop", params=V2021, headers=auth)
        second = (await client.get(first["@nextLink"], headers=auth)).json()
        assert [s["id"] for s in second["sessions"]] == ["s2", "s3"]
        third = (await client.get(second["@nextLink"], headers=auth)).json()
        assert [s["id"] for s in third["sessions"]] == ["s4"]
        assert "@nextLink" not in third


async def test_bad_skip_token(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """A forged page token answers 400."""
    response = await client.get(BASE, params={**V2021, "skipToken": "!!"}, headers=auth)
    assert response.status_code == 400


async def test_v1_sessions_are_visible_through_2021(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """Both APIs see the account's sessions; a v1 lease shows as whole minutes rounded up."""
    created = await client.post(
        f"/v1/accounts/{ACCOUNT}/sessions/create",
        json={"maxLeaseTime": "0:10:30", "size": "premium"},
        headers=auth,
    )
    sid = created.json()["sessionId"]
    body = (await client.get(f"{BASE}/{sid}", params=V2021, headers=auth)).json()
    assert (body["maxLeaseTimeMinutes"], body["size"]) == (11, "Premium")
