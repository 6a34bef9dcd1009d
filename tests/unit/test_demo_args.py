"""The demo's arguments: refused before anything starts, with a message that says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from arr_prefect.flows.demo import _parser, parse_args, summary_text
from arr_prefect.flows.render_batch import RenderSummary, TimelinePhase

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


def _summary(**changes: object) -> RenderSummary:
    fields: dict[str, object] = {
        "session_id": "e68149b2-c26e-46c0-9982-badcc11506ad",
        "size": "standard",
        "api_version": "v1",
        "time_to_ready_seconds": 96.0,
        "job": "callable arr_prefect.flows.sample_job:render_frames",
        "job_outcome": "failed",
        "job_error": "SampleJobError: sample job failed on purpose at frame 2",
        "lease_renewals": 1,
        "session_final_status": "Stopped",
        "stopped_by": "finally",
        "billed_minutes": 5,
        "run_seconds": 280.0,
        "job_seconds": 181.0,
        "stop_seconds": 1.3,
        "timeline": [
            TimelinePhase(name="create → Ready", start_seconds=0.0, seconds=96.0),
            TimelinePhase(name="job", start_seconds=98.0, seconds=181.0),
            TimelinePhase(name="stop", start_seconds=279.0, seconds=1.3),
        ],
    }
    fields.update(changes)
    return RenderSummary.model_validate(fields)


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param(_summary(), id="failed-job"),
        pytest.param(_summary(job_outcome="succeeded", job_error=None), id="succeeded"),
        pytest.param(
            _summary(session_id=None, stopped_by=None, timeline=[], job_error="a | b"),
            id="no-session-and-a-pipe",
        ),
    ],
)
def test_summary_text_from_the_artifact_is_the_summarys_own(summary: RenderSummary) -> None:
    """A failed run's summary, read back from its Markdown artifact, prints as the
    summary itself does (the demo's only copy of it when the flow raised)."""
    expected = summary.text().replace("a | b", "a / b")  # the artifact's table has no pipes
    assert summary_text(summary.markdown()) == expected


def test_help_is_plain_text_with_every_default() -> None:
    """--help shows no reStructuredText markup, and every option says its default."""
    text = _parser().format_help()
    assert "``" not in text
    options = [a for a in _parser()._actions if a.option_strings != ["-h", "--help"]]
    for action in options:
        assert action.help is not None
        assert "default" in action.help, action.option_strings
