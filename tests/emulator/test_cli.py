"""``arr-emulator``: every option reaches the emulator it serves, and ``--version``."""

from __future__ import annotations

import importlib.metadata
import socket
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from arr_prefect.clock import ScaledClock, SystemClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator import cli as emulator_cli
from arr_prefect.emulator.app import EmulatorApp
from arr_prefect.models import SessionSize
from tests.emulator._support import V2021

SERVED_ACCOUNT = "33333333-3333-3333-3333-333333333333"
SERVED_KEY = "served-account-key"


def serve_with(monkeypatch: pytest.MonkeyPatch, argv: Sequence[str]) -> Emulator:
    """Run ``arr-emulator argv`` up to the point of serving; return the emulator it serves."""
    served: list[Any] = []

    def run_server(app: Any, sock: socket.socket, **options: Any) -> None:
        served.append(app)

    monkeypatch.setattr(emulator_cli, "run_server", run_server)
    assert emulator_cli.main(["--port", "0", "--log-level", "warning", *argv]) == 0
    (app,) = served
    assert isinstance(app, EmulatorApp)
    assert isinstance(app.emulator, Emulator)
    return app.emulator


async def test_max_sessions_is_the_served_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --max-sessions 1 the served emulator refuses a second session with 403."""
    emulator = serve_with(
        monkeypatch,
        ["--max-sessions", "1", "--account-id", SERVED_ACCOUNT, "--account-key", SERVED_KEY],
    )
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://e") as client:
        token = await client.get(
            f"/accounts/{SERVED_ACCOUNT}/token",
            headers={"Authorization": f"Bearer {SERVED_ACCOUNT}:{SERVED_KEY}"},
        )
        auth = {"Authorization": f"Bearer {token.json()['AccessToken']}"}
        body = {"maxLeaseTimeMinutes": 15, "size": "Standard"}
        answers = [
            await client.put(
                f"/accounts/{SERVED_ACCOUNT}/sessions/{name}", params=V2021, json=body, headers=auth
            )
            for name in ("first", "second")
        ]
    assert [a.status_code for a in answers] == [201, 403]
    assert answers[1].json()["error"]["code"] == "QuotaExceeded"


OPTIONS = [
    pytest.param(["--max-sessions", "3"], lambda e: e.state.max_sessions, 3, id="max-sessions"),
    pytest.param([], lambda e: e.state.max_sessions, None, id="no-max-sessions"),
    pytest.param(
        ["--startup-seconds", "7"], lambda e: e.state.startup_seconds, 7.0, id="startup-seconds"
    ),
    pytest.param(["--region", "eastus"], lambda e: e.state.region, "eastus", id="region"),
    pytest.param(
        ["--capacity-standard", "2", "--capacity-premium", "1"],
        lambda e: e.state.capacity,
        {SessionSize.STANDARD: 2, SessionSize.PREMIUM: 1},
        id="capacity",
    ),
    pytest.param(
        ["--token-lifetime", "600"], lambda e: e.state.token_lifetime, 600.0, id="token-lifetime"
    ),
    pytest.param(["--page-size", "5"], lambda e: e.page_size, 5, id="page-size"),
    pytest.param([], lambda e: e.page_size, 100, id="default-page-size"),
    pytest.param(
        ["--account-id", SERVED_ACCOUNT, "--account-key", SERVED_KEY],
        lambda e: e.state.accounts,
        {SERVED_ACCOUNT: SERVED_KEY},
        id="account",
    ),
    pytest.param(["--admin-token", "t0k"], lambda e: e.admin_token, "t0k", id="admin-token"),
    pytest.param([], lambda e: type(e.clock), SystemClock, id="real-time"),
    pytest.param(["--time-scale", "60"], lambda e: type(e.clock), ScaledClock, id="time-scale"),
    pytest.param(
        [
            "--p-throttle=0.1",
            "--p-server-error=0.2",
            "--p-slow=0.3",
            "--slow-seconds=2",
            "--p-drop=0.4",
            "--p-lost-create=0.5",
            "--p-session-error=0.25",
            "--retry-after=4",
            "--seed=3",
        ],
        lambda e: e.faults.config()["random"],
        {
            "p_throttle": 0.1,
            "p_server_error": 0.2,
            "p_slow": 0.3,
            "slow_seconds": 2.0,
            "p_drop": 0.4,
            "p_lost_create": 0.5,
            "p_session_error": 0.25,
            "retry_after": 4,
            "seed": 3,
        },
        id="random-faults",
    ),
]


@pytest.mark.parametrize(("argv", "read", "expected"), OPTIONS)
def test_each_option_reaches_the_served_emulator(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], read: Any, expected: object
) -> None:
    """What an option says is what the emulator being served has, not only what argparse read."""
    assert read(serve_with(monkeypatch, argv)) == expected


def test_version_prints_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints ``arr-prefect <version>`` from the package metadata and exits 0."""
    with pytest.raises(SystemExit) as exited:
        emulator_cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"arr-prefect {importlib.metadata.version('arr-prefect')}\n"
