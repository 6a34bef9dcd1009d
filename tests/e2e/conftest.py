"""End-to-end fixtures: one loopback stack (Prefect server, process pool and worker, the
project's deployments, arr-emulator) shared by every scenario, and the results table.

The stack is started once per session and only when an e2e test runs; every process is
killed at the end, also when a test fails. The table of results is printed in pytest's
terminal summary (so it shows under capture too) and written next to the stack's logs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import _fleet
from tests.e2e._stack import LEASE_MINUTES, TIME_SCALE, Stack, running_stack


@dataclass(frozen=True)
class ScenarioResult:
    """One row of the table: how a scenario's session ended and what it cost."""

    scenario: str
    stopped_by: str
    seconds_to_stop: float
    overrun_seconds: float
    """Emulated seconds billed after the trigger."""
    run_state: str
    expected: str = "-"
    """The layer the scenario requires to stop the session."""
    lease_minutes: float = LEASE_MINUTES
    """The scenario's rolling lease (emulated)."""


NOT_MEASURED = (math.nan, math.nan, "-")
"""seconds_to_stop, overrun_seconds and run_state of a scenario that failed early."""

_results: list[ScenarioResult] = []
_table_file: list[Path] = []
_timings: list[str] = []
"""Lines for the summary: how long the stack's own set-up took."""


def note_timing(line: str) -> None:
    """Add a line to the e2e summary (set-up figures, slow scenarios)."""
    _timings.append(line)


def record(result: ScenarioResult) -> None:
    """Add a scenario's row to the table."""
    _results.append(result)


def render_table(results: list[ScenarioResult]) -> str:
    """The results as a fixed-width text table."""
    default_lease = LEASE_MINUTES * 60
    header = (
        "scenario",
        "must be stopped by",
        "stopped by",
        "seconds to stop",
        "billed overrun",
        "flow run",
    )

    def overrun(seconds: float, lease_minutes: float) -> str:
        if math.isnan(seconds):
            return "-"
        # Clamped: a stop within the measurement's few milliseconds can read as a hair
        # before the trigger.
        seconds = max(0.0, seconds)
        lease = lease_minutes * 60
        return f"{seconds:.0f} s ({seconds / lease:.0%} of a {lease_minutes:g} min lease)"

    rows = [
        (
            r.scenario,
            r.expected,
            r.stopped_by,
            "-" if math.isnan(r.seconds_to_stop) else f"{r.seconds_to_stop:.2f} s",
            overrun(r.overrun_seconds, r.lease_minutes),
            r.run_state,
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    title = (
        f"Session teardown, end to end (emulated time x{TIME_SCALE:g}; rolling lease"
        f" {LEASE_MINUTES:g} min = {default_lease:.0f} s emulated,"
        f" {default_lease / TIME_SCALE:.0f} s real, unless a row says otherwise;"
        " seconds to stop are real, overrun is billed emulated time after the trigger)"
    )
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The running loopback stack; every process is ended at the end of the session."""
    workdir = tmp_path_factory.mktemp("e2e")
    try:
        with running_stack(workdir) as running:
            venv = running.ensure_venv()
            note_timing(
                f"worker venv (wheel only): wheel built in {venv.build_seconds:.1f} s,"
                + (
                    f" reinstalled into the reused venv in {venv.install_seconds:.1f} s"
                    if venv.reused
                    else f" fresh venv + pip install in {venv.install_seconds:.1f} s"
                )
            )
            yield running
    finally:
        if _results:
            table = workdir / "teardown-table.txt"
            table.write_text(render_table(_results) + "\n")
            _table_file.append(table)


@pytest.fixture
def live_worker(stack: Stack) -> Stack:
    """The stack with a live worker (restarted if a scenario killed it)."""
    if not stack.processes["worker"].alive():
        stack.replace_worker()
    return stack


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the scenario table at the end of the run, whatever pytest captured."""
    if _timings:
        terminalreporter.section("e2e set-up")
        for line in _timings:
            terminalreporter.write_line(line)
    if _fleet.rows:
        terminalreporter.section("e2e fleet")
        for line in _fleet.timings:
            terminalreporter.write_line(line)
        terminalreporter.write_line(_fleet.render_table())
    if not _results:
        return
    terminalreporter.section("e2e session teardown")
    terminalreporter.write_line(render_table(_results))
    for path in _table_file:
        terminalreporter.write_line(f"(also written to {path})")
