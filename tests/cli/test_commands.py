"""Every `arr` command against the in-process emulator, through Typer's runner.

The client is injected (``build_app(client_for=...)``) with the emulator's transport and a
virtual clock, so waits of minutes take milliseconds; the settings still come from the
command line, the environment and arrconfig.json, as for an operator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from arr_prefect import ArrClient
from arr_prefect.auth import TokenCache
from arr_prefect.cli import build_app
from arr_prefect.cli.commands import EXIT_FAILED, EXIT_SESSION_ENDED, EXIT_USAGE
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, Emulator
from arr_prefect.settings import ArrSettings
from tests.cli.test_config import vendor_template, write_config

KEY = "cli-test-key-never-shown-7f3a"
URL = "http://127.0.0.1:9"  # never dialled: the transport is in-process
SESSION_KEYS = {
    "id",
    "status",
    "size",
    "maxLeaseTimeMinutes",
    "elapsedTimeMinutes",
    "creationTime",
    "hostname",
    "handshakePort",
    "arrInspectorPort",
    "error",
}
# Anything but newline: ANSI escapes, carriage returns, backspaces...
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(autojump=True)


@pytest.fixture
def emulator(clock: VirtualClock) -> Emulator:
    return Emulator({DEFAULT_ACCOUNT_ID: KEY}, clock=clock, startup_seconds=45, seed=3)


@pytest.fixture(params=["v1", "2021-01-01"])
def api_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Arr:
    """Runs `arr` in-process against the emulator and keeps what it printed."""

    def __init__(self, emulator: Emulator, clock: VirtualClock, env: dict[str, str]) -> None:
        self.emulator = emulator
        self.clients: list[ArrSettings] = []

        def client_for(settings: ArrSettings) -> ArrClient:
            self.clients.append(settings)
            return ArrClient(
                settings, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
            )

        self.blocks: dict[str, dict[str, Any]] = {}
        self.app = build_app(client_for=client_for, load_block=lambda name: self.blocks[name])
        self.runner = CliRunner(env=env)
        self.results: list[Result] = []

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> Result:
        result = self.runner.invoke(self.app, list(args), input=input)
        self.results.append(result)
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        result = self(*args, "--json", code=code)
        return json.loads(result.stdout)  # exactly one document, or this raises


@pytest.fixture
def env(api_version: str) -> dict[str, str]:
    return {
        "ARR_ACCOUNT_ID": DEFAULT_ACCOUNT_ID,
        "ARR_ACCOUNT_KEY": KEY,
        "ARR_SERVICE_URL": URL,
        "ARR_STS_URL": URL,
        "ARR_API_VERSION": api_version,
        "NO_COLOR": "",
        "FORCE_COLOR": "",
        "TTY_COMPATIBLE": "",
    }


@pytest.fixture
def arr(
    emulator: Emulator,
    clock: VirtualClock,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Arr]:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    runner = Arr(emulator, clock, env)
    yield runner
    for result in runner.results:
        assert KEY not in result.stdout + result.stderr, "the account key was echoed"
        assert not CONTROL.search(result.stdout + result.stderr), "control characters in output"


def test_token_prints_expiry_not_the_token(arr: Arr) -> None:
    """`arr token` shows when the token expires; the token itself only with --show-secret."""
    shown = arr("token")
    assert "expires" in shown.stdout
    assert "in 23h 59m" in shown.stdout or "in 24h 00m" in shown.stdout
    assert "eyJ" not in shown.stdout + shown.stderr  # a JWT starts with eyJ
    doc = arr.json("token")
    assert doc["accountId"] == DEFAULT_ACCOUNT_ID
    assert doc["expiresInSeconds"] > 23 * 3600
    assert "accessToken" not in doc
    secret = arr("token", "--show-secret")
    assert secret.stdout.startswith("eyJ")
    assert len(secret.stdout.strip().splitlines()) == 1  # alone on stdout: $(arr token ...)
    assert "expires" in secret.stderr
    assert arr.json("token", "--show-secret")["accessToken"].startswith("eyJ")


def test_whole_lifecycle_with_json(arr: Arr, emulator: Emulator, api_version: str) -> None:
    """create → get --wait → list → extend --by → extend --lease → stop, every answer JSON
    with the 2021-01-01 property names, whichever API version is spoken."""
    created = arr.json("sessions", "create", "--size", "premium", "--lease", "1h30m")
    assert set(created) == SESSION_KEYS
    assert (created["status"], created["size"], created["maxLeaseTimeMinutes"]) == (
        "Starting",
        "Premium",
        90,
    )
    sid = created["id"]
    ready = arr.json("sessions", "get", sid, "--wait")
    assert set(ready) == SESSION_KEYS
    assert ready["status"] == "Ready"
    assert ready["hostname"]
    assert 49152 <= ready["handshakePort"] <= 65534
    assert isinstance(ready["arrInspectorPort"], int)
    assert (ready["creationTime"] is None) == (api_version == "v1")
    [listed] = arr.json("sessions", "list")
    assert listed["id"] == sid
    assert set(listed) == SESSION_KEYS
    longer = arr.json("sessions", "extend", sid, "--by", "30m")
    assert longer["maxLeaseTimeMinutes"] == 120
    total = arr.json("sessions", "extend", sid, "--lease", "3:00:00")
    assert total["maxLeaseTimeMinutes"] == 180
    stopped = arr.json("sessions", "stop", sid)
    assert set(stopped) == SESSION_KEYS | {"stopped"}
    assert (stopped["id"], stopped["status"], stopped["stopped"]) == (sid, "Stopped", True)
    if api_version != "v1":  # 2021-01-01 drops the host of a stopped session
        assert stopped["hostname"] is None
    again = arr.json("sessions", "stop", sid)
    assert (again["status"], again["stopped"]) == ("Stopped", False)
    unknown = "0" * 8 + "-0000-0000-0000-" + "0" * 12 if api_version == "v1" else "no-such"
    assert arr.json("sessions", "stop", unknown) == {"id": unknown, "stopped": False}
    assert arr.json("sessions", "get", sid)["status"] == "Stopped"
    assert arr.json("sessions", "list") == []
    assert emulator.running() == []
    [entry] = emulator.ledger()["sessions"]
    assert entry["extend_count"] == 2


def test_people_get_tables_and_durations(arr: Arr, clock: VirtualClock) -> None:
    """Without --json: a properties table, a sessions table, durations as `1h 05m`."""
    created = arr("sessions", "create", "--lease", "2h")
    assert "Created session" in created.stderr
    assert "lease 2h 00m" in created.stderr
    sid = arr.json("sessions", "list")[0]["id"]
    arr("sessions", "get", sid, "--wait")
    clock.advance(65 * 60)
    shown = arr("sessions", "get", sid)
    assert re.search(r"^elapsed\s+1h 05m$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^lease left\s+(54|55)m$", shown.stdout, re.M), shown.stdout
    table = arr("sessions", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "SIZE", "STATUS", "ELAPSED", "LEASE", "LEFT", "HOST"]
    assert sid in table[2]
    assert "Ready" in table[2]
    assert "1h 05m" in table[2]
    assert all(line == line.rstrip() for line in table)
    extended = arr("sessions", "extend", sid, "--by", "1h")
    assert "2h 00m -> 3h 00m" in extended.stderr
    assert "Stopped session" in arr("sessions", "stop", sid).stdout
    assert "No active sessions." in arr("sessions", "list").stdout


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(("sessions", "stop"), id="stopped"),
        pytest.param(None, id="expired"),
    ],
)
def test_a_session_that_is_over_has_no_lease_left(
    arr: Arr, clock: VirtualClock, end: tuple[str, str] | None
) -> None:
    """Stopped or Expired, a session shows "lease left -", not what its numbers subtract to."""
    sid = arr.json("sessions", "create", "--lease", "30m", "--wait")["id"]
    clock.advance(5 * 60)
    if end is None:
        clock.advance(30 * 60)
    else:
        arr(*end, sid)
    shown = arr("sessions", "get", sid).stdout
    assert re.search(r"^status\s+(Stopped|Expired)$", shown, re.M), shown
    assert re.search(r"^elapsed\s+\d", shown, re.M), shown  # the numbers are there...
    assert re.search(r"^lease left\s+-$", shown, re.M), shown  # ...and no lease is left


def test_create_wait_shows_progress_without_control_characters(arr: Arr) -> None:
    """`create --wait` off a terminal: plain status lines on stderr, the session on stdout."""
    result = arr("sessions", "create", "--wait", "--lease", "30m")
    assert re.search(r"session \S+: Starting\n", result.stderr)
    assert re.search(r"session \S+: Ready after 45s\n", result.stderr)
    assert re.search(r"^status\s+Ready$", result.stdout, re.M)
    assert not CONTROL.search(result.stdout + result.stderr)
    arr("sessions", "stop", "--all", "--yes")


def test_spinner_animates_only_on_a_terminal(arr: Arr, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the wait is a live spinner (control characters), cleared at the end."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich: treat stdout/stderr as a terminal
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    arr.runner.env = {**arr.runner.env, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    result = arr.runner.invoke(arr.app, ["sessions", "create", "--wait"])
    assert result.exit_code == 0, result.stderr
    assert "\x1b[" in result.stderr  # the spinner's cursor movements and colours
    assert "Ready after 45s" in result.stderr
    arr.runner.env = {**arr.runner.env, "TTY_COMPATIBLE": "", "TTY_INTERACTIVE": ""}
    arr("sessions", "stop", "--all", "--yes")


def test_2021_create_with_chosen_id(arr: Arr, api_version: str) -> None:
    """--id picks the session ID with 2021-01-01; with v1 the service chooses (exit 2)."""
    if api_version == "v1":
        arr("sessions", "create", "--id", "my-session", code=EXIT_USAGE)
        assert arr.emulator.request_counts() == {}
        return
    assert arr.json("sessions", "create", "--id", "my-session")["id"] == "my-session"
    arr("sessions", "stop", "my-session")


def test_stop_all(arr: Arr, emulator: Emulator) -> None:
    """`stop --all --yes` stops every active session; without --yes and no terminal: exit 2."""
    for _ in range(3):
        arr("sessions", "create", "--lease", "20m")
    arr("sessions", "stop", "--all", code=EXIT_USAGE)
    assert len(emulator.running()) == 3
    stopped = arr.json("sessions", "stop", "--all", "--yes")
    assert sorted(s["stopped"] for s in stopped) == [True, True, True]
    assert {s["status"] for s in stopped} == {"Stopped"}
    assert all(set(s) == SESSION_KEYS | {"stopped"} for s in stopped)
    assert emulator.running() == []
    assert arr.json("sessions", "stop", "--all", "--yes") == []


def test_ended_in_error_while_waiting_exits_3(
    clock: VirtualClock, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session that goes to Error (no capacity) while --wait waits: exit 3, the service's
    message and the MS-CV on stderr, the session (status Error) on stdout."""
    monkeypatch.chdir(tmp_path)
    emulator = Emulator({DEFAULT_ACCOUNT_ID: KEY}, clock=clock, capacity={"standard": 0})
    arr = Arr(emulator, clock, env)
    result = arr("sessions", "create", "--wait", "--json", code=EXIT_SESSION_ENDED)
    session = json.loads(result.stdout)
    assert session["status"] == "Error"
    assert "No capacity" in session["error"]["message"]
    assert "ended in Error" in result.stderr
    assert re.search(r"MS-CV: [A-Za-z0-9+/=]+\.\d", result.stderr), result.stderr
    people = arr("sessions", "get", session["id"], "--wait", code=EXIT_SESSION_ENDED)
    assert re.search(r"^status\s+Error$", people.stdout, re.M)
    assert emulator.running() == []


def test_expired_while_waiting_exits_3(arr: Arr, clock: VirtualClock) -> None:
    """A session whose lease ran out: `get` shows it (exit 0), `get --wait` exits 3."""
    sid = arr.json("sessions", "create", "--lease", "10m", "--wait")["id"]
    clock.advance(11 * 60)
    assert arr.json("sessions", "get", sid)["status"] == "Expired"
    result = arr("sessions", "get", sid, "--wait", code=EXIT_SESSION_ENDED)
    assert "expired" in result.stderr


def test_service_error_exits_1_with_the_ms_cv(
    arr: Arr, emulator: Emulator, api_version: str
) -> None:
    """5xx after the client's retries: exit 1, the message carries the MS-CV."""
    route = "v1.list" if api_version == "v1" else "v2021.list"
    emulator.faults.add(kind="server_error", route=route, times=50, status=503)
    result = arr("sessions", "list", code=EXIT_FAILED)
    assert "HTTP 503" in result.stderr
    assert re.search(r"MS-CV: [A-Za-z0-9+/=]+\.\d", result.stderr), result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_unknown_session_exits_1(arr: Arr) -> None:
    """404 for get is a service answer: exit 1, with the MS-CV."""
    result = arr("sessions", "get", "no-such-session", code=EXIT_FAILED)
    assert "HTTP 404" in result.stderr
    assert "MS-CV:" in result.stderr


def test_wrong_key_exits_1_without_echoing_it(arr: Arr) -> None:
    """401 from the token service: exit 1; neither key appears anywhere."""
    other_key = "a-wrong-key-also-never-shown"
    arr.runner.env = {**arr.runner.env, "ARR_ACCOUNT_KEY": other_key}
    result = arr("sessions", "list", code=EXIT_FAILED)
    assert "HTTP 401" in result.stderr
    assert other_key not in result.stdout + result.stderr


def test_unreachable_service_exits_1(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer at all (nothing listens): exit 1, saying there is no MS-CV to give."""
    monkeypatch.chdir(tmp_path)
    app = build_app(
        client_for=lambda s: ArrClient(
            s.model_copy(update={"max_attempts": 1}), token_cache=TokenCache()
        )
    )
    result = CliRunner(env=env).invoke(app, ["sessions", "list"])
    assert result.exit_code == EXIT_FAILED, result.stderr
    assert "no answer from the service" in result.stderr
    assert "MS-CV" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["sessions", "create", "--lease", "90"], id="lease-without-unit"),
        pytest.param(["sessions", "create", "--lease", "25h"], id="lease-over-24h"),
        pytest.param(["sessions", "create", "--lease", "0m"], id="lease-zero"),
        pytest.param(["sessions", "create", "--size", "huge"], id="unknown-size"),
        pytest.param(["sessions", "get", "../etc"], id="unsafe-session-id"),
        pytest.param(["sessions", "extend", "abc"], id="extend-without-lease-or-by"),
        pytest.param(
            ["sessions", "extend", "abc", "--lease", "1h", "--by", "1h"], id="extend-with-both"
        ),
        pytest.param(["sessions", "extend", "abc", "--by", "later"], id="extend-bad-duration"),
        pytest.param(["sessions", "stop"], id="stop-without-id"),
        pytest.param(["sessions", "stop", "abc", "--all"], id="stop-id-and-all"),
        pytest.param(["sessions", "list", "--region", "atlantis"], id="unknown-region"),
        pytest.param(["sessions", "list", "--account-id", "not-a-guid"], id="bad-account-id"),
        pytest.param(
            ["sessions", "list", "--service-url", "http://example.com"],
            id="plain-http-off-loopback",
        ),
        pytest.param(["sessions", "list", "--api-version", "2019"], id="unknown-api-version"),
        pytest.param(["sessions", "list", "--config", "missing.json"], id="missing-config-file"),
        pytest.param(["sessions", "frobnicate"], id="unknown-command"),
        pytest.param(["sessions", "get"], id="missing-argument"),
    ],
)
def test_bad_input_exits_2_before_any_request(
    arr: Arr, emulator: Emulator, args: list[str]
) -> None:
    """Bad usage or input: exit 2 with a message, and nothing was sent to the service."""
    result = arr(*args, code=EXIT_USAGE)
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert emulator.request_counts() == {}


def test_missing_account_exits_2(arr: Arr, emulator: Emulator) -> None:
    """No account configured anywhere: exit 2, naming the settings to give."""
    arr.runner.env = {**arr.runner.env, "ARR_ACCOUNT_ID": None, "ARR_ACCOUNT_KEY": None}
    result = arr("sessions", "list", code=EXIT_USAGE)
    assert "ARR_ACCOUNT_KEY" in result.stderr
    assert emulator.request_counts() == {}


def test_extend_lease_below_elapsed_refused(
    arr: Arr, clock: VirtualClock, emulator: Emulator
) -> None:
    """--lease shorter than the time already run would end the session: refused (exit 2)."""
    sid = arr.json("sessions", "create", "--lease", "2h", "--wait")["id"]
    clock.advance(3600)
    result = arr("sessions", "extend", sid, "--lease", "30m", code=EXIT_USAGE)
    assert "--by" in result.stderr
    assert arr.json("sessions", "get", sid)["status"] == "Ready"
    arr("sessions", "stop", sid)


def test_extend_by_caps_at_24_hours(arr: Arr) -> None:
    """--by beyond the service's 24 h limit is capped there, and says so."""
    sid = arr.json("sessions", "create", "--lease", "23h", "--wait")["id"]
    result = arr("sessions", "extend", sid, "--by", "2h")
    assert "capped at 24 hours" in result.stderr
    assert arr.json("sessions", "get", sid)["maxLeaseTimeMinutes"] == 24 * 60
    arr("sessions", "extend", sid, "--by", "1m", code=EXIT_USAGE)
    arr("sessions", "stop", sid)


def test_arrconfig_json_as_the_vendor_writes_it(
    arr: Arr, emulator: Emulator, tmp_path: Path
) -> None:
    """With only the vendor's arrconfig.json (the env emptied), every field is honoured:
    the account, both domains as full URLs, vmSize and maxLeaseTime as create's defaults."""
    config = write_config(
        tmp_path / "arrconfig.json",
        vendor_template(
            accountSettings={
                "arrAccountId": DEFAULT_ACCOUNT_ID,
                "arrAccountKey": KEY,
                "arrAccountDomain": URL,
            },
            renderingSessionSettings={
                "remoteRenderingDomain": URL,
                "vmSize": "premium",
                "maxLeaseTime": "01:15:00",
            },
        ),
    )
    arr.runner.env = {
        **arr.runner.env,
        **dict.fromkeys(("ARR_ACCOUNT_ID", "ARR_ACCOUNT_KEY", "ARR_SERVICE_URL", "ARR_STS_URL")),
    }
    created = arr.json("sessions", "create", "--config", str(config))
    assert (created["size"], created["maxLeaseTimeMinutes"]) == ("Premium", 75)
    assert arr.clients[-1].service_base_url == URL
    # The group's options work before the command too.
    assert arr.json("--config", str(config), "sessions", "list")[0]["id"] == created["id"]
    # Flags beat the file: a --size and --lease on the command line win.
    flagged = arr.json(
        "sessions", "create", "--config", str(config), "--size", "standard", "--lease", "20m"
    )
    assert (flagged["size"], flagged["maxLeaseTimeMinutes"]) == ("Standard", 20)
    arr("sessions", "stop", "--all", "--yes", "--config", str(config))
    assert emulator.running() == []


def test_block_sits_between_flags_and_environment(arr: Arr, api_version: str) -> None:
    """--block NAME supplies settings over ARR_*; a flag still beats the block."""
    arr.blocks["ops"] = {
        "account_id": "22222222-2222-2222-2222-222222222222",
        "account_key": KEY,
        "service_url": URL,
        "sts_url": URL,
        "api_version": api_version,
    }
    # The emulator knows no such account: 401, but the block's account was the one used.
    arr("sessions", "list", "--block", "ops", code=EXIT_FAILED)
    assert arr.clients[-1].account_id == "22222222-2222-2222-2222-222222222222"
    arr("sessions", "list", "--block", "ops", "--account-id", DEFAULT_ACCOUNT_ID)
    assert arr.clients[-1].account_id == DEFAULT_ACCOUNT_ID


def test_group_options_and_command_options_combine(arr: Arr, api_version: str) -> None:
    """`arr --json sessions list` and `arr sessions list --json` are the same."""
    assert json.loads(arr("--json", "sessions", "list").stdout) == []
    other = "2021-01-01" if api_version == "v1" else "v1"
    arr("--api-version", other, "sessions", "list")
    assert arr.clients[-1].api_version == other


def test_stop_all_asks_a_person_first(
    arr: Arr, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, `stop --all` without --yes lists the sessions and asks; "n" stops nothing."""
    monkeypatch.setattr("arr_prefect.cli.commands._interactive", lambda: True)
    sid = arr.json("sessions", "create", "--lease", "20m")["id"]
    declined = arr("sessions", "stop", "--all", input="n\n", code=EXIT_USAGE)
    assert sid in declined.stdout
    assert "Nothing was stopped." in declined.stderr
    assert len(emulator.running()) == 1
    accepted = arr("sessions", "stop", "--all", input="y\n")
    assert f"Stopped session {sid}." in accepted.stdout
    assert emulator.running() == []


def test_ready_timeout_exits_1_and_says_what_to_do(arr: Arr, emulator: Emulator) -> None:
    """Not Ready by ARR_READY_TIMEOUT: exit 1, and the hint to check on it or stop it."""
    arr.runner.env = {**arr.runner.env, "ARR_READY_TIMEOUT": "30"}
    result = arr("sessions", "create", "--wait", code=EXIT_FAILED)
    assert "was not Ready after 30s" in result.stderr
    assert "arr sessions stop" in result.stderr
    arr("sessions", "stop", "--all", "--yes")


def test_interrupted_wait_exits_130_and_names_the_running_session(
    arr: Arr, emulator: Emulator, clock: VirtualClock, env: dict[str, str]
) -> None:
    """Ctrl-C while waiting is normal: no traceback, exit 130, how to stop the session."""

    class Interrupted(ArrClient):
        async def wait_until_ready(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt

    app = build_app(
        client_for=lambda s: Interrupted(
            s, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
        )
    )
    result = CliRunner(env=env).invoke(app, ["sessions", "create", "--wait"])
    assert result.exit_code == 130
    [session] = emulator.running()
    assert f"arr sessions stop {session.id}" in result.stderr
    assert "Traceback" not in result.output
    arr("sessions", "stop", session.id)
