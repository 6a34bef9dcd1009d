"""The demo end to end, in-process: the emulator on loopback, a fast scaled clock."""

from __future__ import annotations

import argparse
import re

import pytest

from arr_prefect.flows import demo

# 60x (the demo's own pace) and a 10-minute lease: a loaded machine cannot outrun it.
FAST = ["--frames=2", "--seconds-per-frame=30", "--startup-seconds=30", "--lease-minutes=10"]


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo points ARR_* at its emulator: undo that after each test."""
    for name in (
        "ARR_SERVICE_URL",
        "ARR_STS_URL",
        "ARR_ACCOUNT_ID",
        "ARR_ACCOUNT_KEY",
        "ARR_API_VERSION",
        demo.EPHEMERAL_STARTUP_TIMEOUT_ENV,
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("api_version", ["v1", "2021-01-01"])
def test_demo_renders_and_leaves_nothing_running(
    api_version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo renders on the chosen API version and exits 0 with nothing left running."""
    assert demo.main([*FAST, f"--api-version={api_version}"]) == 0
    out = capsys.readouterr().out
    assert "OK: the batch rendered and no session is left running." in out
    assert "Render batch summary (durations in emulated time" in out


def test_demo_fail_at_frame_shows_teardown(capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-at-frame fails the job on purpose; the session is stopped and the demo says so."""
    assert demo.main([*FAST, "--fail-at-frame=1"]) == 0
    out = capsys.readouterr().out
    assert "The job failed as asked (sample job failed on purpose at frame 1)" in out
    assert "the session was stopped all the same" in out
    # Said before the run, so Prefect's traceback reads as expected; then the summary,
    # from the run's artifact, as a succeeded run shows it.
    assert out.index("fail at frame 1 on purpose") < out.index("Render batch summary")
    summary = out.split("Render batch summary", 1)[1].split("Emulator ledger", 1)[0]
    assert "durations in emulated time: the emulator runs 60x faster" in summary
    assert re.search(r"Outcome +failed: SampleJobError: sample job failed on purpose", summary)
    assert re.search(r"Stopped +by finally in ", summary)
    assert re.search(r"Final status +Stopped", summary)
    assert re.search(r"job +\+.*, took ", summary), summary


def test_slow_first_start_hint() -> None:
    """A temporary server that did not start in time gets advice, not a bare RuntimeError."""
    hint = demo._explain_start_failure(
        RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    )
    assert hint is not None
    assert demo.EPHEMERAL_STARTUP_TIMEOUT_ENV in hint
    assert "PREFECT_API_URL" in hint
    assert demo._explain_start_failure(RuntimeError("something else")) is None


def test_slow_first_start_gets_180_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo gives Prefect's temporary server 180 s to start (Prefect's own default is
    20 s), although Prefect read its settings before the demo ran; an operator's own
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    seen: list[int] = []

    def attempt(_args: argparse.Namespace) -> tuple[None, BaseException]:
        seen.append(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        return None, RuntimeError(
            "Timed out while attempting to connect to ephemeral Prefect API server."
        )

    monkeypatch.setattr(demo, "_attempt", attempt)
    assert demo.main(FAST) == 1
    assert seen == [demo.EPHEMERAL_STARTUP_TIMEOUT_SECONDS] == [180]
    assert "did not start within 180 s" in capsys.readouterr().err
    assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() != 180  # not left set

    for name in ("ARR_SERVICE_URL", "ARR_STS_URL", "ARR_ACCOUNT_ID", "ARR_ACCOUNT_KEY"):
        monkeypatch.delenv(name)  # the first run pointed them at its emulator
    monkeypatch.setenv(demo.EPHEMERAL_STARTUP_TIMEOUT_ENV, "600")
    seen.clear()
    assert demo.main(FAST) == 1
    assert seen != [180]  # the operator's variable is Prefect's to read, not overridden
