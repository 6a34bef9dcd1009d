"""One ``arr`` command's run: settings resolved, a client opened, failures mapped to an
exit status (:func:`run`). The statuses are :data:`EXIT_STATUSES`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import typer

from arr_prefect.cli.config import resolve_settings
from arr_prefect.cli.options import scope_of
from arr_prefect.cli.output import Output
from arr_prefect.client import ArrClient
from arr_prefect.dialects import dialect_for
from arr_prefect.errors import (
    ArrError,
    ArrTransportError,
    InvalidInputError,
    ReadyTimeoutError,
    SessionEndedError,
)
from arr_prefect.settings import ArrSettings

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SESSION_ENDED",
    "EXIT_STATUSES",
    "EXIT_USAGE",
    "Done",
    "Invocation",
    "run",
    "service_chooses_session_id",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SESSION_ENDED = 3
EXIT_INTERRUPTED = 130

EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "a service or network error (the message carries the MS-CV)"),
    (EXIT_USAGE, "bad usage or bad input, caught before any request changes anything"),
    (
        EXIT_SESSION_ENDED,
        "a session that ended (Error, Expired, or Stopped) while --wait waited for it",
    ),
    (EXIT_INTERRUPTED, "interrupted"),
)
"""Every exit status of ``arr`` and what it means (the reference prints this table)."""


@dataclass
class Invocation:
    """One command's resolved settings, config file, output and client."""

    settings: ArrSettings
    config: Any
    out: Output
    arr: ArrClient


class Done(Exception):
    """Leave with an exit status, after the message was printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def service_chooses_session_id(inv: Invocation) -> bool:
    """True when the service, not the caller, chooses a new session's ID (API v1).

    The dialect of the chosen API version says; ``arr`` never compares version names.
    """
    return not dialect_for(inv.settings.api_version).client_chooses_session_id


def run(
    ctx: typer.Context,
    body: Callable[[Invocation], Awaitable[None]],
    *,
    check: Callable[[], None] | None = None,
) -> None:
    """Run a command: ``check`` its input, resolve the settings, run ``body`` with a client.

    Args:
        ctx: The command's context; its ``obj`` holds the options and the app's wiring.
        body: What the command does, given the invocation.
        check: Validates the command's own input before anything is resolved or sent.

    Raises:
        typer.Exit: With the exit status, when it is not 0 (the message is printed first).
    """
    scope = scope_of(ctx)
    out = Output(as_json=scope.options.as_json)
    try:
        if check is not None:
            check()
        settings, config = resolve_settings(scope.options.sources(), scope.wiring.load_block)

        async def main() -> None:
            async with scope.wiring.client_for(settings) as arr:
                await body(Invocation(settings, config, out, arr))

        asyncio.run(main())
    except Done as done:
        code = done.code
    except (ArrError, KeyboardInterrupt) as exc:
        code = _report(out, exc)
    else:
        code = EXIT_OK
    if code != EXIT_OK:
        raise typer.Exit(code)


def _report(out: Output, exc: ArrError | KeyboardInterrupt) -> int:
    """Print what went wrong, and return the exit status it calls for."""
    if isinstance(exc, KeyboardInterrupt):
        out.error("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(exc, InvalidInputError):
        out.error(str(exc))
        return EXIT_USAGE
    if isinstance(exc, ReadyTimeoutError):
        out.error(str(exc))
        out.note(
            f"The session is still starting, and billed once Ready: check it with"
            f" `arr sessions get {exc.session_id} --wait`, or stop it with"
            f" `arr sessions stop {exc.session_id}`."
        )
        return EXIT_FAILED
    if isinstance(exc, SessionEndedError):
        if exc.session is not None:
            out.session(exc.session)
        out.error(str(exc))
        return EXIT_SESSION_ENDED
    if isinstance(exc, ArrTransportError):
        out.error(f"{exc} (no answer from the service, so no MS-CV)")
        return EXIT_FAILED
    out.error(str(exc))
    return EXIT_FAILED
