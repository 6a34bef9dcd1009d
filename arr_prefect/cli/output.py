"""What ``arr`` prints: JSON for scripts, tables and plain lines for people.

- ``--json``: exactly one JSON document on stdout. A session is an object with the
  2021-01-01 API's property names whichever API version is in use (:func:`session_json`);
  a list is a JSON array of them.
- Otherwise Rich tables and lines. Colours and the spinner appear only on a terminal
  (Rich's detection, which honours ``NO_COLOR`` and ``FORCE_COLOR``); piped or redirected,
  the output is plain text with no control characters. Progress and errors go to stderr,
  so stdout holds only the result.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from rich import box
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from arr_prefect.cli.durations import format_duration
from arr_prefect.models import Session, SessionStatus

__all__ = [
    "Output",
    "lease_left",
    "session_json",
]

# Wide enough that session IDs and host names are never wrapped when output is piped
# (Rich assumes 80 columns when it cannot ask a terminal).
_PIPED_WIDTH = 200

_STATUS_STYLE = {
    SessionStatus.STARTING: "yellow",
    SessionStatus.READY: "green",
    SessionStatus.STOPPING: "yellow",
    SessionStatus.STOPPED: "dim",
    SessionStatus.EXPIRED: "red",
    SessionStatus.ERROR: "red",
}


def _minutes(value: timedelta | None) -> int | None:
    """Whole minutes, rounded down, as 2021-01-01 reports ``elapsedTimeMinutes``."""
    return None if value is None else int(value.total_seconds() // 60)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def lease_left(session: Session) -> timedelta | None:
    """The lease a session has left; None (shown as "-") unless it is Starting or Ready:
    a session that is over holds no VM, so it has no lease left whatever its numbers say."""
    return session.remaining if session.status.is_active else None


def session_json(session: Session) -> dict[str, Any]:
    """A session in the 2021-01-01 API's property names, from either API version.

    v1 leases and elapsed times (TimeSpans) become whole minutes, rounded down; v1 has no
    ``creationTime`` (null) and its ``message`` becomes ``error.message``.
    """
    error = (
        {"code": session.error_code, "message": session.message}
        if session.message or session.error_code
        else None
    )
    return {
        "id": session.id,
        "status": session.status.value,
        "size": session.size.value if session.size is not None else None,
        "maxLeaseTimeMinutes": _minutes(session.max_lease),
        "elapsedTimeMinutes": _minutes(session.elapsed),
        "creationTime": _iso(session.created_at),
        "hostname": session.hostname,
        "handshakePort": session.handshake_port,
        "arrInspectorPort": session.arr_inspector_port,
        "error": error,
    }


def _console(stderr: bool) -> Console:
    # Built per call, not at import: tests (and Typer's runner) swap sys.stdout/sys.stderr.
    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, _PIPED_WIDTH)
    return console


class Output:
    """Where one invocation prints: ``out`` for results, ``err`` for progress and errors."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)

    # ------------------------------------------------------------------ results

    def json(self, document: Any) -> None:
        """One JSON document on stdout (written as is: no wrapping, no colours)."""
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        sys.stdout.flush()

    def line(self, text: str | Text, *, style: str | None = None) -> None:
        """A line of text on stdout; user data in it is never read as Rich markup."""
        self.out.print(
            text if isinstance(text, Text) else Text(text, style=style or ""), soft_wrap=True
        )

    def note(self, text: str, *, style: str | None = None) -> None:
        """A line on stderr: progress, hints, warnings."""
        self.err.print(Text(text, style=style or ""), soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)

    def status_text(self, status: SessionStatus) -> Text:
        return Text(status.value, style=_STATUS_STYLE.get(status, ""))

    def session(self, session: Session) -> None:
        """One session: JSON, or its properties as a two-column table."""
        if self.as_json:
            self.json(session_json(session))
            return
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("property", style="bold")
        table.add_column("value", overflow="fold")
        rows: list[tuple[str, str | Text]] = [
            ("id", session.id),
            ("status", self.status_text(session.status)),
            ("size", session.size.value if session.size else "-"),
            ("elapsed", format_duration(session.elapsed)),
            ("lease", format_duration(session.max_lease)),
            ("lease left", format_duration(lease_left(session))),
        ]
        if session.created_at is not None:
            rows.append(("created", _iso(session.created_at) or "-"))
        if session.hostname:
            rows.append(("host", session.hostname))
        if session.handshake_port is not None:
            rows.append(("handshake port", str(session.handshake_port)))
        if session.arr_inspector_port is not None:
            rows.append(("inspector port", str(session.arr_inspector_port)))
        if session.message or session.error_code:
            detail = ": ".join(p for p in (session.error_code, session.message) if p)
            rows.append(("error", Text(detail, style="red")))
        for name, value in rows:
            table.add_row(name, value)
        self._table(table)

    def sessions(self, sessions: list[Session]) -> None:
        """Sessions as a table (id, size, status, elapsed, lease left, host), or a JSON array."""
        if self.as_json:
            self.json([session_json(s) for s in sessions])
            return
        if not sessions:
            self.line("No active sessions.")
            return
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("ID", no_wrap=True)
        table.add_column("SIZE")
        table.add_column("STATUS")
        table.add_column("ELAPSED", justify="right")
        table.add_column("LEASE LEFT", justify="right")
        table.add_column("HOST", no_wrap=True)
        for s in sessions:
            table.add_row(
                s.id,
                s.size.value if s.size else "-",
                self.status_text(s.status),
                format_duration(s.elapsed),
                format_duration(lease_left(s)),
                s.hostname or "-",
            )
        self._table(table)

    def _table(self, table: Table) -> None:
        """A table: as Rich draws it on a terminal; piped, without the trailing spaces
        Rich pads every line with."""
        if self.out.is_terminal:
            self.out.print(table)
            return
        with self.out.capture() as captured:
            self.out.print(table)
        lines = [line.rstrip() for line in captured.get().splitlines()]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()

    # ------------------------------------------------------------------ progress

    @contextmanager
    def progress(self, description: str) -> Iterator[ProgressReporter]:
        """A spinner with the elapsed time on a terminal; plain lines otherwise."""
        reporter = ProgressReporter(self.err, description)
        with reporter:
            yield reporter


def _waited(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class _Ticking:
    """Rich renderable: the current label and the time waited, recomputed at each refresh."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.label = ""

    def __rich__(self) -> Text:
        return Text(f"{self.label} ({_waited(time.monotonic() - self.started)})")


class ProgressReporter:
    """Shows a wait's status: an animated spinner on a terminal (stderr), else one plain
    line per status change, so a log or a pipe never receives control characters."""

    def __init__(self, console: Console, description: str) -> None:
        self.console = console
        self.description = description
        self.animated = console.is_terminal and not console.is_dumb_terminal
        self._ticking = _Ticking(time.monotonic())
        self._status: Status | None = None

    def __enter__(self) -> ProgressReporter:
        if self.animated:
            self._ticking.label = self.description
            self._status = self.console.status(self._ticking)
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def update(self, text: str) -> None:
        """The current state changed: show it."""
        if self._status is not None:
            self._ticking.label = f"{self.description}: {text}"
        else:
            self.console.print(Text(f"{self.description}: {text}"), soft_wrap=True)
