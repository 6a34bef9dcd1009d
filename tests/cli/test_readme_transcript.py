"""The README's `arr` transcript, replayed against the in-process emulator, so it cannot rot.

Each `$ arr ...` line runs again (session IDs mapped to the new run's, `sleep` advancing
the virtual clock); the exit statuses must be the transcript's and the output the same
once IDs, numbers and column padding are set aside.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arr_prefect import ArrClient
from arr_prefect.auth import TokenCache
from arr_prefect.cli import build_app
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator

README = (Path(__file__).parents[2] / "docs" / "arr.md").read_text()
SECTION = README.split("## A real run", 1)[1].split("\n## ", 1)[0]
CONFIG = SECTION.split("```json\n", 1)[1].split("```", 1)[0]
TRANSCRIPT = SECTION.split("```console\n", 1)[1].split("```", 1)[0]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def steps() -> list[tuple[str, list[str], int]]:
    """(command, output lines, exit status) for each `$` line of the transcript."""
    found: list[tuple[str, list[str], int]] = []
    for chunk in ("\n" + TRANSCRIPT).split("\n$ ")[1:]:
        command, *lines = chunk.rstrip("\n").split("\n")
        status = 0
        if lines and (m := re.fullmatch(r"\[exit status (\d+)\]", lines[-1])):
            status, lines = int(m[1]), lines[:-1]
        found.append((command, lines, status))
    return found


def normalized(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = UUID.sub("<id>", line)
        line = re.sub(r"MS-CV: \S+\)", "MS-CV: <cv>)", line)
        line = re.sub(r"\d+", "9", line)
        line = re.sub(r"─+", "─", line)
        out.append(re.sub(r"\s+", " ", line).strip())
    return out


def test_transcript_is_complete() -> None:
    """The transcript shows every command of the issue's table and each failure status."""
    commands = " ".join(c for c, _, _ in steps())
    for needed in ("arr token", "create", "--wait", "list", "extend", "--json", "stop --all"):
        assert needed in commands
    assert {s for _, _, s in steps()} == {0, 1, 2}


def test_readme_transcript_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command of the README's transcript gives the same output and exit status."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arrconfig.json").write_text(CONFIG)
    clock = VirtualClock(autojump=True)
    emulator = Emulator({DEFAULT_ACCOUNT_ID: DEFAULT_ACCOUNT_KEY}, clock=clock, startup_seconds=20)
    app = build_app(
        client_for=lambda s: ArrClient(
            s, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
        )
    )
    runner = CliRunner(env={"NO_COLOR": "", "FORCE_COLOR": "", "TTY_COMPATIBLE": ""})
    ids: dict[str, str] = {}
    for command, expected, status in steps():
        argv = shlex.split(command)
        if argv[0] == "sleep":
            clock.advance(float(argv[1]))
            continue
        assert argv[0] == "arr", command
        result = runner.invoke(app, [ids.get(a, a) for a in argv[1:]])
        assert result.exit_code == status, (command, result.output)
        actual = result.output.rstrip("\n").split("\n") if result.output.strip() else []
        for old, new in zip(
            UUID.findall("\n".join(expected)), UUID.findall(result.output), strict=True
        ):
            ids.setdefault(old, new)
        assert normalized(actual) == normalized(expected), command
    assert emulator.running() == []
