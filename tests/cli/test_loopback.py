"""`arr` as operators run it: the installed console script, over real HTTP, against
`arr-emulator` started as a process (time runs 60x faster in both)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY
from tests.cli.test_commands import CONTROL, SESSION_KEYS
from tests.cli.test_config import vendor_template, write_config
from tests.emulator.test_serving import running_emulator


def _arr() -> list[str]:
    script = Path(sys.executable).with_name("arr")
    return [str(script)] if script.exists() else ["arr"]


def run_arr(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*_arr(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert DEFAULT_ACCOUNT_KEY not in result.stdout + result.stderr
    assert not CONTROL.search(result.stdout + result.stderr), (result.stdout, result.stderr)
    return result


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.loopback
def test_console_script_against_the_emulator_process(tmp_path: Path) -> None:
    """token, create --wait, list, get, extend, stop and exits 1, 2 and 3, through the
    installed `arr` script and an arrconfig.json naming the emulator's URL in its domain
    fields. Once, with 2021-01-01 as the vendor's script speaks it (the in-process tests
    cover both API versions)."""
    api_version = "2021-01-01"
    with running_emulator("--startup-seconds", "30", "--time-scale", "60") as (process, url):
        config = write_config(
            tmp_path / "arrconfig.json",
            vendor_template(
                accountSettings={
                    "arrAccountId": DEFAULT_ACCOUNT_ID,
                    "arrAccountKey": DEFAULT_ACCOUNT_KEY,
                    "arrAccountDomain": url,
                },
                renderingSessionSettings={
                    "remoteRenderingDomain": url,
                    "vmSize": "standard",
                    "maxLeaseTime": "0:45:00",
                },
            ),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARR_", "FORCE_COLOR"))}
        env.update(ARR_TIME_SCALE="60", ARR_API_VERSION=api_version)
        base = ("--config", str(config))

        token = _json(run_arr("token", "--json", *base, env=env, cwd=tmp_path))
        assert token["accountId"] == DEFAULT_ACCOUNT_ID
        created = run_arr("sessions", "create", "--wait", "--json", *base, env=env, cwd=tmp_path)
        session = _json(created)
        assert set(session) == SESSION_KEYS
        assert (session["status"], session["maxLeaseTimeMinutes"]) == ("Ready", 45)
        assert "Ready after" in created.stderr
        sid = session["id"]
        listed = run_arr("sessions", "list", *base, env=env, cwd=tmp_path)
        assert listed.returncode == 0
        assert sid in listed.stdout
        assert _json(run_arr("sessions", "get", sid, "--json", *base, env=env, cwd=tmp_path))[
            "hostname"
        ]
        extended = _json(
            run_arr("sessions", "extend", sid, "--by", "1h", "--json", *base, env=env, cwd=tmp_path)
        )
        assert extended["maxLeaseTimeMinutes"] == 105
        stopped = run_arr("sessions", "stop", sid, *base, env=env, cwd=tmp_path)
        assert (stopped.returncode, stopped.stdout) == (0, f"Stopped session {sid}.\n")
        bad = run_arr("sessions", "create", "--lease", "90", *base, env=env, cwd=tmp_path)
        assert bad.returncode == 2
        missing = run_arr("sessions", "get", "nope", *base, env=env, cwd=tmp_path)
        assert missing.returncode == 1
        assert "MS-CV: " in missing.stderr
        with httpx.Client(base_url=url) as http:
            http.post("/_emulator/faults", json={"kind": "no_capacity", "route": "*.create"})
            failed = run_arr("sessions", "create", "--wait", *base, env=env, cwd=tmp_path)
            assert failed.returncode == 3, failed.stderr
            assert "No capacity" in failed.stdout + failed.stderr
            ledger = http.get("/_emulator/ledger").json()
        assert ledger["running"] == 0
        process.terminate()
        assert process.wait(10) == 0


def test_arr_does_not_import_prefect() -> None:
    """`arr` starts without Prefect (imported only for --block), so it stays fast."""
    code = (
        "import sys, arr_prefect.cli;"
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.loopback
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_waiting(tmp_path: Path) -> None:
    """SIGINT during `create --wait` (a real Ctrl-C): exit 130, no traceback, and how to stop
    the session that keeps running."""
    with running_emulator("--startup-seconds", "600") as (process, url):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARR_")}
        env.update(
            ARR_ACCOUNT_ID=DEFAULT_ACCOUNT_ID,
            ARR_ACCOUNT_KEY=DEFAULT_ACCOUNT_KEY,
            ARR_SERVICE_URL=url,
            ARR_STS_URL=url,
        )
        waiting = subprocess.Popen(
            [*_arr(), "sessions", "create", "--wait"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Ctrl-C as a terminal delivers it: a run started in the background by a
            # non-interactive shell (nohup ... &) inherits SIGINT ignored, and Python then
            # installs no KeyboardInterrupt handler.
            preexec_fn=_default_sigint,
        )
        try:
            assert waiting.stderr is not None
            # Raw reads: a buffered readline could hold "Starting" in its buffer while
            # select waits on the (then empty) pipe.
            seen = ""
            while "Starting" not in seen:
                ready, _, _ = select.select([waiting.stderr], [], [], 60)
                assert ready, f"no status within 60 s: {seen!r}"
                chunk = os.read(waiting.stderr.fileno(), 4096)
                assert chunk, f"arr ended early: {seen!r}"
                seen += chunk.decode()
            waiting.send_signal(signal.SIGINT)
            _, raw_err = waiting.communicate(timeout=30)
            err = raw_err.decode()
        finally:
            if waiting.poll() is None:
                waiting.kill()
        assert waiting.returncode == 130, seen + err
        assert "Traceback" not in err
        sid = re.search(r"Created session (\S+) ", seen)
        assert sid is not None
        assert f"arr sessions stop {sid[1]}" in err
        stopped = run_arr("sessions", "stop", sid[1], env=env, cwd=tmp_path)
        assert stopped.returncode == 0
        process.terminate()
        assert process.wait(10) == 0
