"""The admin API's token: required beyond loopback (and whenever one is set), never on loopback."""

from __future__ import annotations

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator.cli import is_loopback
from tests.emulator._support import ACCOUNT, KEY, MS_CV, START
from tests.emulator.test_serving import running_emulator

ADMIN = [
    ("GET", "/_emulator/ledger"),
    ("GET", "/_emulator/requests"),
    ("GET", "/_emulator/faults"),
    ("POST", "/_emulator/faults"),
    ("DELETE", "/_emulator/faults"),
    ("POST", "/_emulator/tokens/expire"),
    ("POST", "/_emulator/clock/advance"),
]


async def test_with_a_token_every_admin_route_requires_it() -> None:
    """Without the token (or with a wrong one): 401 JSON with MS-CV; with it: served."""
    emu = Emulator({ACCOUNT: KEY}, clock=VirtualClock(start=START), admin_token="s3cret")
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emu") as client:
        for method, path in ADMIN:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                refused = await client.request(method, path, headers=headers, json={})
                assert refused.status_code == 401, (method, path, headers)
                assert refused.json()["error"]["code"] == "Unauthorized"
                assert MS_CV.match(refused.headers["MS-CV"])
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/_emulator/ledger", headers=good)).status_code == 200
        fault = {"kind": "throttle", "route": "v1.list"}
        assert (await client.post("/_emulator/faults", json=fault, headers=good)).status_code == 200
        assert (await client.get("/_emulator/health")).status_code == 200  # probes stay open
    assert len(emu.faults.pending()) == 1  # only the authorised fault was added


async def test_without_a_token_loopback_stays_frictionless(
    client: httpx.AsyncClient,
) -> None:
    """The default in-process/loopback emulator serves the admin API with no token."""
    assert (await client.get("/_emulator/ledger")).status_code == 200


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("127.0.0.1", True, id="ipv4-loopback"),
        pytest.param("127.1.2.3", True, id="ipv4-loopback-net"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("0.0.0.0", False, id="any-ipv4"),
        pytest.param("::", False, id="any-ipv6"),
        pytest.param("", False, id="empty-is-any"),
        pytest.param("192.168.1.5", False, id="lan"),
        pytest.param("emulator.example", False, id="name"),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    """Only addresses reachable from this machine alone count as loopback."""
    assert is_loopback(host) is expected


@pytest.mark.loopback
def test_cli_beyond_loopback_prints_and_requires_a_token() -> None:
    """`--host 0.0.0.0`: a generated token is printed at start and required by the admin API."""
    with running_emulator("--host", "0.0.0.0", expect_host="0.0.0.0") as (process, url):
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("arr-emulator admin token: "), line
        token = line.rsplit(" ", 1)[1].strip()
        base = url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=base, timeout=5) as client:
            assert client.get("/_emulator/ledger").status_code == 401
            ok = client.get("/_emulator/ledger", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            assert client.get("/_emulator/health").status_code == 200


@pytest.mark.loopback
def test_cli_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ARR_EMULATOR_ADMIN_TOKEN sets the token (not printed), on loopback too."""
    monkeypatch.setenv("ARR_EMULATOR_ADMIN_TOKEN", "from-env")
    with running_emulator() as (process, url):
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "from-env" not in line
        assert "requires the token" in line
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/_emulator/ledger").status_code == 401
            headers = {"Authorization": "Bearer from-env"}
            assert client.get("/_emulator/ledger", headers=headers).status_code == 200
