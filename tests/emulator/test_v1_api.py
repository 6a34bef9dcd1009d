"""The v1 session API over HTTP (in-process), with the service's exact answers."""

from __future__ import annotations

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from tests.emulator._support import ACCOUNT, MS_CV, V1_CREATE_BODY, v1_create

BASE = f"/v1/accounts/{ACCOUNT}/sessions"


async def test_full_lifecycle(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """Create 202 + Location, properties, extend 200 empty, list, stop 204, Stopped."""
    created = await client.post(f"{BASE}/create", json=V1_CREATE_BODY, headers=auth)
    assert created.status_code == 202
    sid = created.json()["sessionId"]
    assert created.json() == {"sessionId": sid}
    assert created.headers["Location"] == f"accounts/{ACCOUNT}/sessions/{sid}"

    starting = (await client.get(f"{BASE}/{sid}/properties", headers=auth)).json()
    assert starting == {
        "message": None,
        "sessionElapsedTime": "00:00:00",
        "sessionHostname": None,
        "sessionId": sid,
        "sessionMaxLeaseTime": "04:00:00",
        "sessionSize": "Standard",
        "sessionStatus": "Starting",
        "arrInspectorPort": None,
        "handshakePort": None,
    }

    clock.advance(30 + 61)
    ready = (await client.get(f"{BASE}/{sid}/properties", headers=auth)).json()
    assert ready["sessionStatus"] == "Ready"
    assert ready["sessionElapsedTime"] == "00:01:01"
    assert ready["sessionHostname"].endswith(".remoterenderingvm.westus2.mixedreality.azure.com")
    assert 49152 <= ready["handshakePort"] <= 65534
    assert 49152 <= ready["arrInspectorPort"] <= 65534

    extended = await client.patch(f"{BASE}/{sid}", json={"maxLeaseTime": "5:0:0"}, headers=auth)
    assert extended.status_code == 200
    assert extended.content == b""
    assert extended.headers["Content-Length"] == "0"

    listed = await client.get(BASE, headers=auth)
    assert listed.status_code == 200
    [entry] = listed.json()["sessions"]
    assert (entry["sessionId"], entry["sessionMaxLeaseTime"]) == (sid, "05:00:00")

    stopped = await client.delete(f"{BASE}/{sid}", headers=auth)
    assert stopped.status_code == 204
    assert stopped.content == b""
    after = (await client.get(f"{BASE}/{sid}/properties", headers=auth)).json()
    assert after["sessionStatus"] == "Stopped"
    assert (await client.get(BASE, headers=auth)).json() == {"sessions": []}
    for response in (created, extended, listed, stopped):
        assert MS_CV.match(response.headers["MS-CV"])


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/v1/Accounts/{ACCOUNT}/sessions/Create", id="seed-capitalised"),
        pytest.param(f"/V1/ACCOUNTS/{ACCOUNT}/SESSIONS/CREATE", id="upper"),
        pytest.param(f"/v1/accounts/{ACCOUNT.upper()}/sessions/create", id="account-upper"),
    ],
)
async def test_paths_are_case_insensitive(
    client: httpx.AsyncClient, auth: dict[str, str], path: str
) -> None:
    """v1 literals (and account ids) match whatever their case."""
    response = await client.post(path, json=V1_CREATE_BODY, headers=auth)
    assert response.status_code == 202


async def test_create_is_not_idempotent(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """Two identical creates make two billed sessions."""
    first, second = await v1_create(client, auth), await v1_create(client, auth)
    assert first != second
    assert emu.ledger()["running"] == 2


async def test_sub_second_lease_is_kept(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """A lease's fraction of a second is echoed back (clients fingerprint creates with it)."""
    sid = await v1_create(client, auth, lease="04:00:00.1234560")
    props = (await client.get(f"{BASE}/{sid}/properties", headers=auth)).json()
    assert props["sessionMaxLeaseTime"] == "04:00:00.1234560"


async def test_expired_session_shows_message(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """An expired session reports Expired with a message and leaves the list."""
    sid = await v1_create(client, auth, lease="0:10:0")
    clock.advance(30 + 600)
    props = (await client.get(f"{BASE}/{sid}/properties", headers=auth)).json()
    assert (props["sessionStatus"], props["message"]) == ("Expired", "The session's lease expired.")
    assert props["sessionElapsedTime"] == "00:10:00"
    assert (await client.get(BASE, headers=auth)).json() == {"sessions": []}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"maxLeaseTime": "4 hours", "size": "standard"}, id="bad-timespan"),
        pytest.param({"maxLeaseTime": "0:0:0", "size": "standard"}, id="zero-lease"),
        pytest.param({"maxLeaseTime": "1.00:00:01", "size": "standard"}, id="over-24h"),
        pytest.param({"maxLeaseTime": "4:0:0", "size": "huge"}, id="unknown-size"),
        pytest.param({"size": "standard"}, id="missing-lease"),
        pytest.param({"maxLeaseTime": "4:0:0"}, id="missing-size"),
        pytest.param(
            {"maxLeaseTime": "4:0:0", "size": "standard", "models": "x"}, id="models-not-list"
        ),
        pytest.param(["not", "an", "object"], id="not-an-object"),
    ],
)
async def test_create_validation_errors(
    client: httpx.AsyncClient, auth: dict[str, str], body: object
) -> None:
    """Invalid create bodies answer 400 BadRequest with a message."""
    response = await client.post(f"{BASE}/create", json=body, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert response.json()["error"]["message"]
    assert MS_CV.match(response.headers["MS-CV"])


async def test_invalid_json_is_bad_request(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """A body that is not JSON answers 400."""
    response = await client.post(f"{BASE}/create", content=b"{nope", headers=auth)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "BadRequest",
        "message": "The request body is not valid JSON.",
    }


async def test_extend_validation_and_ended_session(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """Extend refuses bad leases and ended sessions with 400."""
    sid = await v1_create(client, auth)
    bad = await client.patch(f"{BASE}/{sid}", json={"maxLeaseTime": "25:00:00"}, headers=auth)
    assert bad.status_code == 400
    await client.delete(f"{BASE}/{sid}", headers=auth)
    ended = await client.patch(f"{BASE}/{sid}", json={"maxLeaseTime": "5:0:0"}, headers=auth)
    assert ended.status_code == 400
    assert "Stopped" in ended.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        pytest.param("GET", "/properties", id="properties"),
        pytest.param("PATCH", "", id="extend"),
        pytest.param("DELETE", "", id="stop"),
    ],
)
async def test_unknown_session_is_404(
    client: httpx.AsyncClient, auth: dict[str, str], method: str, suffix: str
) -> None:
    """Operations on an unknown session answer 404 NotFound."""
    response = await client.request(
        method,
        f"{BASE}/00000000-0000-0000-0000-000000000000{suffix}",
        json={"maxLeaseTime": "1:0:0"},
        headers=auth,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


async def test_stop_is_idempotent(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """Stopping a stopped session answers 204 again."""
    sid = await v1_create(client, auth)
    assert (await client.delete(f"{BASE}/{sid}", headers=auth)).status_code == 204
    assert (await client.delete(f"{BASE}/{sid}", headers=auth)).status_code == 204
    [entry] = emu.ledger()["sessions"]
    assert (entry["status"], entry["stop_requests"]) == ("Stopped", 2)


async def test_unknown_route_and_method(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """Unknown paths answer 404, a known path with the wrong method 405, both with MS-CV."""
    missing = await client.get("/v2/whatever", headers=auth)
    assert missing.status_code == 404
    wrong = await client.put(f"{BASE}/create", headers=auth)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "MethodNotAllowed"
    assert MS_CV.match(missing.headers["MS-CV"])
    assert MS_CV.match(wrong.headers["MS-CV"])


async def test_emulator_bug_answers_500_like_the_service(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error inside the emulator still answers a JSON 500 with MS-CV."""

    def broken(account_id: str) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(emu.state, "list_active", broken)
    response = await client.get(BASE, headers=auth)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalServerError"
    assert MS_CV.match(response.headers["MS-CV"])
