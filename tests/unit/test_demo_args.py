"""The demo's arguments: refused before anything starts, with a message that says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from arr_prefect.flows.demo import parse_args

REPO = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    """No arguments: the emulator demo as documented."""
    args = parse_args([], configured=False)
    assert (args.size, args.frames, args.fail_at_frame, args.api_version) == (
        "standard",
        10,
        None,
        None,
    )


def test_every_documented_argument_is_taken() -> None:
    """--size, --frames, --api-version, --time-scale and --fail-at-frame parse."""
    args = parse_args(
        [
            "--size=premium",
            "--frames=6",
            "--api-version=2021-01-01",
            "--time-scale=120",
            "--fail-at-frame=3",
        ],
        configured=False,
    )
    assert (args.size, args.frames, args.api_version, args.time_scale, args.fail_at_frame) == (
        "premium",
        6,
        "2021-01-01",
        120.0,
        3,
    )


@pytest.mark.parametrize(
    ("argv", "configured", "message"),
    [
        pytest.param(["--size=huge"], False, "invalid choice", id="size"),
        pytest.param(["--frames=0"], False, "--frames must be at least 1", id="frames-zero"),
        pytest.param(["--frames=x"], False, "invalid int value", id="frames-not-int"),
        pytest.param(["--api-version=v2"], False, "invalid choice", id="api-version"),
        pytest.param(["--time-scale=0"], False, "--time-scale must be above 0", id="scale-zero"),
        pytest.param(
            ["--frames=4", "--fail-at-frame=5"],
            False,
            "between 1 and --frames (4)",
            id="fail-past-end",
        ),
        pytest.param(["--lease-minutes=0.5"], False, "between 1 and 1440", id="lease"),
        pytest.param(
            ["--time-scale=10"], True, "only applies to the built-in emulator", id="scale-real"
        ),
        pytest.param(
            ["--startup-seconds=5"],
            True,
            "only applies to the built-in emulator",
            id="startup-real",
        ),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], configured: bool, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad argument exits 2 with a specific message."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, configured=configured)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARR_", "PREFECT_"))}
    # The script builds ./.venv when missing; here the test's own interpreter's venv is it.
    assert Path(sys.executable).parent == REPO / ".venv" / "bin", "run from the repo's .venv"
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "demo"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_demo_script_help() -> None:
    """``./scripts/demo --help`` prints the arguments (the venv script no longer eats them)."""
    done = _demo("--help")
    assert done.returncode == 0, done.stderr
    for flag in ("--size", "--frames", "--api-version", "--time-scale", "--fail-at-frame"):
        assert flag in done.stdout
    assert "--help]" not in done.stderr  # once read by pip as the extra "placeholder[--help]"


def test_demo_script_refuses_bad_argument_before_starting() -> None:
    """A bad argument is refused by the script before any emulator or server starts."""
    done = _demo("--frames", "0")
    assert done.returncode == 2
    assert "--frames must be at least 1" in done.stderr
    assert "emulator" not in done.stdout
