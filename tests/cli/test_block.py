"""`arr --block NAME` with a real RemoteRenderingCredentials block saved on the session's
Prefect test server (the only `arr` tests that need Prefect)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arr_prefect import ArrClient
from arr_prefect.auth import TokenCache
from arr_prefect.cli import build_app
from arr_prefect.cli.commands import EXIT_USAGE
from arr_prefect.clock import VirtualClock
from arr_prefect.credentials import RemoteRenderingCredentials
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.settings import ArrSettings

BLOCK_ACCOUNT_ID = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BLOCK_ACCOUNT_KEY = "cli-block-account-key-5e2"
URL = "http://127.0.0.1:9"  # never dialled: the transport is in-process


@pytest.fixture
def saved_block(prefect_server: None) -> Iterator[str]:
    name = f"arr-cli-{uuid.uuid4().hex[:10]}"
    RemoteRenderingCredentials(
        account_id=BLOCK_ACCOUNT_ID,
        account_key=BLOCK_ACCOUNT_KEY,
        service_url=URL,
        sts_url=URL,
        api_version="2021-01-01",
    ).save(name)
    yield name
    RemoteRenderingCredentials.delete(name)


def test_block_account_is_used_and_flags_still_win(
    saved_block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--block NAME loads the saved block's account over ARR_*; a flag beats the block;
    an unknown name is bad input (exit 2); the key is never shown."""
    monkeypatch.chdir(tmp_path)
    clock = VirtualClock(autojump=True)
    emulator = Emulator(
        {DEFAULT_ACCOUNT_ID: DEFAULT_ACCOUNT_KEY, BLOCK_ACCOUNT_ID: BLOCK_ACCOUNT_KEY},
        clock=clock,
        startup_seconds=30,
    )
    used: list[ArrSettings] = []

    def client_for(settings: ArrSettings) -> ArrClient:
        used.append(settings)
        return ArrClient(
            settings, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
        )

    app = build_app(client_for=client_for)  # the real block loader
    runner = CliRunner(
        env={
            "ARR_ACCOUNT_ID": DEFAULT_ACCOUNT_ID,
            "ARR_ACCOUNT_KEY": DEFAULT_ACCOUNT_KEY,
            "ARR_SERVICE_URL": URL,
            "ARR_STS_URL": URL,
            "ARR_API_VERSION": "v1",
        }
    )
    created = runner.invoke(app, ["sessions", "create", "--block", saved_block, "--json"])
    assert created.exit_code == 0, created.stderr
    session = json.loads(created.stdout)
    assert (used[-1].account_id, used[-1].api_version) == (BLOCK_ACCOUNT_ID, "2021-01-01")
    assert [s["account_id"] for s in emulator.ledger()["sessions"]] == [BLOCK_ACCOUNT_ID]

    flagged = runner.invoke(
        app, ["sessions", "list", "--block", saved_block, "--api-version", "v1", "--json"]
    )
    assert flagged.exit_code == 0, flagged.stderr
    assert used[-1].api_version == "v1"
    assert [s["id"] for s in json.loads(flagged.stdout)] == [session["id"]]

    stopped = runner.invoke(app, ["--block", saved_block, "sessions", "stop", session["id"]])
    assert stopped.exit_code == 0, stopped.stderr
    assert emulator.running() == []

    unknown = runner.invoke(app, ["sessions", "list", "--block", "no-such-block"])
    assert unknown.exit_code == EXIT_USAGE
    assert "no RemoteRenderingCredentials block named 'no-such-block'" in unknown.stderr
    for result in (created, flagged, stopped, unknown):
        assert BLOCK_ACCOUNT_KEY not in result.stdout + result.stderr
