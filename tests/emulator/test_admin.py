"""The /_emulator/ admin API and the Emulator facade's accounting."""

from __future__ import annotations

import importlib

import httpx
import pytest

import arr_prefect.emulator as package
from arr_prefect.clock import SystemClock, VirtualClock
from arr_prefect.emulator import Emulator
from tests.emulator._support import ACCOUNT, KEY, MS_CV, START, v1_create

V1 = f"/v1/accounts/{ACCOUNT}/sessions"


async def test_ledger_tracks_every_session(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, clock: VirtualClock
) -> None:
    """The ledger lists every session ever created with billing; `running` counts active ones."""
    stopped = await v1_create(client, auth)
    running = await v1_create(client, auth)
    clock.advance(90)
    await client.patch(f"{V1}/{running}", json={"maxLeaseTime": "5:0:0"}, headers=auth)
    await client.delete(f"{V1}/{stopped}", headers=auth)
    clock.advance(10)
    response = await client.get("/_emulator/ledger")
    assert response.status_code == 200
    assert MS_CV.match(response.headers["MS-CV"])
    ledger = response.json()
    assert ledger == emu.ledger()
    assert ledger["running"] == 1
    entries = {e["id"]: e for e in ledger["sessions"]}
    assert entries[stopped] | {"hostname": None} == {
        "id": stopped,
        "account_id": ACCOUNT,
        "api_version": "v1",
        "size": "Standard",
        "status": "Stopped",
        "created_at": "2023-11-14T22:13:20.000Z",
        "ready_at": "2023-11-14T22:13:50.000Z",
        "ended_at": "2023-11-14T22:14:50.000Z",
        "end_reason": "stopped",
        "billed_seconds": 90.0,
        "max_lease_seconds": 14400.0,
        "elapsed_seconds": 60.0,
        "extend_count": 0,
        "extend_history": [],
        "stop_requests": 1,
        "message": None,
        "error_code": None,
        "hostname": None,
        "models": [],
    }
    assert (entries[running]["extend_count"], entries[running]["billed_seconds"]) == (1, 100.0)
    assert [r.id for r in emu.running()] == [running]


async def test_request_counts(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """Requests are counted per route name and status, admin calls included."""
    await client.get(V1, headers=auth)
    await client.get(V1)
    counts = (await client.get("/_emulator/requests")).json()["counts"]
    assert counts["sts.token"] == {"200": 1}
    assert counts["v1.list"] == {"200": 1, "401": 1}
    assert emu.request_count("v1.list") == 2
    assert emu.request_count("v1.list", 401) == 1
    assert emu.request_counts()["admin.requests"] == {"200": 1}


async def test_tokens_expire_endpoint(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """POST /_emulator/tokens/expire revokes every token issued so far."""
    revoked = await client.post("/_emulator/tokens/expire")
    assert revoked.json() == {"revoked": 1}
    assert (await client.get(V1, headers=auth)).status_code == 401


async def test_clock_advance(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """POST /_emulator/clock/advance moves a virtual clock (and sessions with it)."""
    sid = await v1_create(client, auth)
    response = await client.post("/_emulator/clock/advance", json={"seconds": 30})
    assert response.json() == {"time": "2023-11-14T22:13:50.000Z"}
    assert clock.time() == START + 30
    props = (await client.get(f"{V1}/{sid}/properties", headers=auth)).json()
    assert props["sessionStatus"] == "Ready"
    assert (await client.post("/_emulator/clock/advance", json={"seconds": -1})).status_code == 400


async def test_clock_advance_needs_a_virtual_clock() -> None:
    """With a real clock, advancing answers 409."""
    emu = Emulator(clock=SystemClock())
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as client:
        response = await client.post("/_emulator/clock/advance", json={"seconds": 1})
    assert response.status_code == 409


async def test_health(client: httpx.AsyncClient) -> None:
    """GET /_emulator/health answers ok with the emulator's time."""
    body = (await client.get("/_emulator/health")).json()
    assert body["status"] == "ok"
    assert body["time"] == "2023-11-14T22:13:20.000Z"


def test_default_account() -> None:
    """Emulator() serves the default account the CLI uses."""
    emu = Emulator()
    assert emu.state.accounts == {package.DEFAULT_ACCOUNT_ID: package.DEFAULT_ACCOUNT_KEY}


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(f"arr_prefect.emulator{suffix}", id=suffix or "package")
        for suffix in ("", ".app", ".cli", ".faults", ".server", ".service", ".state")
    ],
)
def test_every_public_name_is_exported(module: str) -> None:
    """__all__ is sorted (constants, classes, functions), unique, and every name exists."""
    loaded = importlib.import_module(module)
    names = list(loaded.__all__)
    assert names == sorted(names, key=_isort_key)
    assert len(names) == len(set(names))
    assert [name for name in names if not hasattr(loaded, name)] == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"page_size": 0}, "page_size", id="page-size"),
        pytest.param({"startup_seconds": -1}, "startup_seconds", id="startup"),
        pytest.param({"token_lifetime": 0}, "token_lifetime", id="token-lifetime"),
    ],
)
def test_invalid_configuration(kwargs: dict[str, float], match: str) -> None:
    """Nonsensical settings are refused at construction."""
    with pytest.raises(ValueError, match=match):
        Emulator({ACCOUNT: KEY}, **kwargs)  # type: ignore[arg-type]
