"""``arr``: look at, create, extend and stop ARR sessions by hand, on the core client.

=====================================  ==================================  =====================
command                                does                                RenderingSession.ps1
=====================================  ==================================  =====================
``arr token [--show-secret]``          the access token's expiry           -
``arr sessions create [--size]         creates; ``--wait``: spinner until  ``-CreateSession``,
[--lease] [--id] [--wait]``            Ready or a terminal state           default mode
``arr sessions get ID [--wait]``       properties                          ``-GetSessionProperties
                                                                           [-Poll]``
``arr sessions extend ID (--lease      sets the total lease, or adds to    ``-UpdateSession
H:MM:SS | --by DURATION)``             it                                  -MaxLeaseTime``
``arr sessions stop ID`` /             stops one, or every active session  ``-StopSession``
``arr sessions stop --all --yes``
``arr sessions list``                  active sessions as a table          ``-GetSessions``
=====================================  ==================================  =====================

Exit statuses: :data:`~arr_prefect.cli.invocation.EXIT_STATUSES` (0 success, 1 service or
network error, 2 bad input, 3 the session ended while waited for, 130 interrupted).

No Prefect server is needed, and Prefect is imported only for ``--block``.

The commands are module-level functions; :func:`build_app` registers them. Around them:
``options.py`` (the options every command shares, declared once by
:func:`~arr_prefect.cli.options.shared_options`), ``invocation.py`` (settings, client,
exit status), ``output.py`` (what is printed), ``config.py`` (where settings come from),
``reference.py`` (this CLI's reference as Markdown, read from the app).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, timedelta
from importlib import metadata
from typing import Annotated, Any, NoReturn

import typer

from arr_prefect.cli.config import BlockLoader
from arr_prefect.cli.durations import format_duration, parse_duration
from arr_prefect.cli.invocation import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SESSION_ENDED,
    EXIT_USAGE,
    Done,
    Invocation,
    run,
    service_chooses_session_id,
)
from arr_prefect.cli.options import (
    ArrCommand,
    ArrGroup,
    ClientBuilder,
    Scope,
    Wiring,
    load_saved_block,
    shared_options,
)
from arr_prefect.cli.output import lease_left, session_json
from arr_prefect.client import ArrClient
from arr_prefect.errors import (
    ArrError,
    ArrHTTPError,
    ArrTransportError,
    InvalidInputError,
    InvalidLeaseError,
    SessionNotFoundError,
)
from arr_prefect.models import (
    MAX_LEASE,
    Session,
    SessionSize,
    SessionStatus,
    parse_lease,
    validate_session_id,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SESSION_ENDED",
    "EXIT_USAGE",
    "app",
    "build_app",
    "main",
]

DEFAULT_LEASE = timedelta(hours=4)
"""``create``'s lease when neither ``--lease`` nor ``maxLeaseTime`` says: the vendor script's."""

SessionIdArg = Annotated[str, typer.Argument(metavar="ID", help="The session's ID.")]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait", help="Wait until Ready, or until the session ends (exit status 3)."),
]


def _print_version(value: bool) -> None:
    """``--version``: the installed distribution's version, then exit."""
    if not value:
        return
    try:
        version = metadata.version("arr-prefect")
    except metadata.PackageNotFoundError:
        version = "(not installed as a package: no version)"
    typer.echo(f"arr-prefect {version}")
    raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version",
        help="Print arr-prefect's version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
]


def _stop_json(session: Session, stopped: bool) -> dict[str, Any]:
    """What ``arr sessions stop --json`` prints for a session: the session, and whether
    this command stopped it."""
    return {**session_json(session), "stopped": stopped}


def _interactive() -> bool:
    """True when a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _bad_input(message: str) -> NoReturn:
    raise InvalidInputError(message)


# ---------------------------------------------------------------------- shared steps


async def wait_for_ready(inv: Invocation, session_id: str) -> Session:
    """Poll until Ready, showing the status; Error/Expired/Stopped raise (exit 3)."""
    started = inv.arr.clock.time()

    def elapsed() -> str:
        return format_duration(timedelta(seconds=inv.arr.clock.time() - started))

    label = f"session {session_id}"
    try:
        with inv.out.progress(label) as progress:

            def on_status(_old: SessionStatus | None, session: Session) -> None:
                if session.status == SessionStatus.READY:
                    return
                progress.update(session.status.value)

            ready = await inv.arr.wait_until_ready(session_id, on_status=on_status)
    except (KeyboardInterrupt, asyncio.CancelledError):
        inv.out.note(
            f"Stopped waiting. Session {session_id} keeps running (and billing) until its"
            f" lease ends: `arr sessions stop {session_id}` stops it."
        )
        raise
    inv.out.note(f"{label}: Ready after {elapsed()}", style="green")
    return ready


async def stop_one(inv: Invocation, session_id: str) -> tuple[bool, str, dict[str, Any] | None]:
    """Stop a session unless it is already over: (stopped, why not, what --json prints).

    The service answers a stop of a session already over with 204 too, so the status
    is looked at first: the operator learns whether this command stopped anything.
    The session is read again after the stop (a 204 has no body) so that --json
    prints it as every other command does, with ``"stopped"`` added; if that read
    fails, the session stopped all the same and is printed as last seen, Stopped.
    """
    try:
        current = await inv.arr.get_session(session_id)
    except SessionNotFoundError:
        return False, "is unknown to this account", None
    if current.status.is_terminal:
        return False, f"is already {current.status.value}", _stop_json(current, False)
    stopped = await inv.arr.stop_session(session_id)
    try:
        final = await inv.arr.get_session(session_id)
    except (ArrHTTPError, ArrTransportError):
        final = current.model_copy(update={"status": SessionStatus.STOPPED})
    return stopped, "was already over", _stop_json(final, stopped)


# ---------------------------------------------------------------------- arr


@shared_options
def root(ctx: typer.Context, version: VersionOpt = False) -> None:
    """``arr`` itself: its options, given before the command, apply to the command."""


@shared_options
def token(
    ctx: typer.Context,
    show_secret: Annotated[
        bool,
        typer.Option("--show-secret", help="Also print the token itself (a secret)."),
    ] = False,
) -> None:
    """Get an access token from the token service and print when it expires.

    The token itself is printed only with --show-secret (on stdout, alone, so
    TOKEN=$(arr token --show-secret) works; the expiry then goes to stderr).
    """

    async def body(inv: Invocation) -> None:
        tok = await inv.arr.get_access_token()
        left = tok.expires_in(inv.arr.clock.time())
        if inv.out.as_json:
            doc: dict[str, Any] = {
                "accountId": tok.account_id,
                "expiresOn": tok.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
                if tok.expires_at
                else None,
                "expiresInSeconds": int(left) if left is not None else None,
            }
            if show_secret:
                doc["accessToken"] = tok.token.get_secret_value()
            inv.out.json(doc)
            return
        when = (
            f"expires {tok.expires_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            f" (in {format_duration(timedelta(seconds=left or 0))})"
            if tok.expires_at
            else "expiry unknown (the token has no readable exp claim)"
        )
        summary = f"Access token for account {tok.account_id}: {when}"
        if show_secret:
            inv.out.note(summary)
            inv.out.line(tok.token.get_secret_value())
        else:
            inv.out.line(summary)

    run(ctx, body)


# ---------------------------------------------------------------------- arr sessions


@shared_options
def create(
    ctx: typer.Context,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            metavar="standard|premium",
            help="VM size (default: vmSize of --config, else standard).",
        ),
    ] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            "--lease",
            metavar="DURATION",
            help="Total lease, counted from Ready: 90m, 1h30m, 1:30:00 (default:"
            " maxLeaseTime of --config, else 4:00:00).",
        ),
    ] = None,
    session_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="The session's ID (2021-01-01 only: v1 chooses it; default: a fresh one).",
        ),
    ] = None,
    wait: WaitOpt = False,
) -> None:
    """Create a rendering session (billed from Ready until stopped or its lease ends)."""

    async def body(inv: Invocation) -> None:
        chosen_size = (
            SessionSize.parse(size)
            if size is not None
            else (inv.config.default_size() if inv.config else None) or SessionSize.STANDARD
        )
        if lease is not None:
            total = parse_duration(lease)
        else:
            total = (inv.config.default_lease() if inv.config else None) or DEFAULT_LEASE
        total = parse_lease(total)
        if session_id is not None:
            if service_chooses_session_id(inv):
                _bad_input(
                    "--id needs --api-version 2021-01-01: with v1 the service chooses"
                    " the session's ID"
                )
            validate_session_id(session_id)
        session = await inv.arr.create_session(lease=total, size=chosen_size, session_id=session_id)
        inv.out.note(
            f"Created session {session.id} ({chosen_size.value}, lease {format_duration(total)})."
        )
        if wait:
            session = await wait_for_ready(inv, session.id)
        inv.out.session(session)
        if not wait and not inv.out.as_json:
            inv.out.note(f"Wait for it with `arr sessions get {session.id} --wait`.")

    run(ctx, body)


@shared_options
def get(ctx: typer.Context, session_id: SessionIdArg, wait: WaitOpt = False) -> None:
    """Show a session's properties; with --wait, first wait until it is Ready."""

    async def body(inv: Invocation) -> None:
        if wait:
            session = await wait_for_ready(inv, session_id)
        else:
            session = await inv.arr.get_session(session_id)
        inv.out.session(session)

    def check() -> None:
        validate_session_id(session_id)

    run(ctx, body, check=check)


def _extension(session_id: str, lease: str | None, by: str | None) -> dict[str, timedelta]:
    """``extend``'s input, checked: ``{"lease": new total}`` or ``{"by": step}``."""
    validate_session_id(session_id)
    if lease is not None and by is None:
        return {"lease": parse_lease(parse_duration(lease))}
    if by is not None and lease is None:
        step = parse_duration(by)
        if step <= timedelta(0):
            raise InvalidLeaseError(f"--by must be longer than zero, got {by!r}")
        return {"by": step}
    _bad_input("give exactly one of --lease H:MM:SS (the new total) or --by DURATION")


def _extended_lease(
    inv: Invocation, session_id: str, current: Session, wanted: dict[str, timedelta]
) -> timedelta:
    """The total lease to send for ``wanted`` (see :func:`_extension`), from ``current``."""
    elapsed = current.elapsed or timedelta(0)
    if "lease" in wanted:
        target = wanted["lease"]
        if target <= elapsed:
            _bad_input(
                f"--lease {format_duration(target)} is not more than the"
                f" {format_duration(elapsed)} session {session_id} has already run:"
                " the lease is the total since Ready, so the session would end at"
                f" once. To give it more time, use --by (e.g. --by 30m)"
            )
        return target
    base = current.max_lease if current.max_lease is not None else elapsed
    target = base + wanted["by"]
    if target > MAX_LEASE:
        if base >= MAX_LEASE:
            _bad_input(
                f"session {session_id} already has the longest lease the service grants (24 hours)"
            )
        inv.out.note("The lease is capped at 24 hours, the service's limit.")
        target = MAX_LEASE
    return target


@shared_options
def extend(
    ctx: typer.Context,
    session_id: SessionIdArg,
    lease: Annotated[
        str | None,
        typer.Option(
            "--lease",
            metavar="H:MM:SS",
            help="The new total lease, counted from Ready (as the API takes it).",
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            metavar="DURATION",
            help="Add this to the session's lease: 30m, 1h, 0:30:00 (the elapsed time"
            " is counted: the total sent is the current lease plus this).",
        ),
    ] = None,
) -> None:
    """Set a session's total lease (--lease), or give it more time (--by).

    The API takes the total since the session became Ready, never an increment:
    --lease 2:00:00 on a session that has run 1h leaves it 1h; --by 30m adds 30
    minutes to whatever it has left. The most a session can have is 24 hours.
    """
    wanted: dict[str, timedelta] = {}

    def check() -> None:
        wanted.update(_extension(session_id, lease, by))

    async def body(inv: Invocation) -> None:
        current = await inv.arr.get_session(session_id)
        if not current.status.is_active:
            raise ArrError(
                f"session {session_id} is {current.status.value}: a session that is over"
                " cannot be extended" + (f" ({current.message})" if current.message else "")
            )
        target = _extended_lease(inv, session_id, current, wanted)
        updated = await inv.arr.extend_session(session_id, target)
        inv.out.note(
            f"Lease of session {session_id}: {format_duration(current.max_lease)}"
            f" -> {format_duration(updated.max_lease)}"
            f" ({format_duration(lease_left(updated))} left)."
        )
        inv.out.session(updated)

    run(ctx, body, check=check)


async def _stop_all(inv: Invocation, *, ask: bool) -> None:
    """Stop every active session, after asking a person first when ``ask``."""
    active = await inv.arr.list_sessions()
    if ask:
        inv.out.sessions(active)
        if active and not typer.confirm(f"Stop these {len(active)} session(s)?"):
            inv.out.note("Nothing was stopped.")
            raise Done(EXIT_USAGE)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for session in active:
        try:
            stopped, why, document = await stop_one(inv, session.id)
        except (ArrHTTPError, ArrTransportError) as exc:
            failures.append(str(exc))
            inv.out.error(str(exc))
            continue
        results.append(document or {"id": session.id, "stopped": stopped})
        if not inv.out.as_json:
            inv.out.line(
                f"Stopped session {session.id}." if stopped else f"Session {session.id} {why}."
            )
    if inv.out.as_json:
        inv.out.json(results)
    elif not active:
        inv.out.line("No active sessions: nothing to stop.")
    if failures:
        inv.out.error(
            f"{len(failures)} of {len(active)} session(s) could not be stopped;"
            " run the command again, or stop them one by one"
        )
        raise Done(EXIT_FAILED)


@shared_options
def stop(
    ctx: typer.Context,
    session_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="The session to stop.")
    ] = None,
    all_sessions: Annotated[
        bool, typer.Option("--all", help="Stop every active session of the account.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before stopping --all.")
    ] = False,
) -> None:
    """Stop a session, or every active session with --all --yes.

    Stopping is idempotent: a session already over, or unknown, is reported and is
    not an error. With --json: the session as it is after the stop, with "stopped"
    added (false: there was nothing to stop; an unknown ID gives only "id" and
    "stopped"), or an array of them for --all.
    """

    def check() -> None:
        if all_sessions and session_id is not None:
            _bad_input("give a session ID or --all, not both")
        if not all_sessions and session_id is None:
            _bad_input("give the ID of the session to stop, or --all --yes")
        if session_id is not None:
            validate_session_id(session_id)
        if all_sessions and not yes and not _interactive():
            _bad_input("--all stops every active session of the account: add --yes")

    async def body(inv: Invocation) -> None:
        if session_id is None:
            await _stop_all(inv, ask=not yes)
            return
        stopped, why, document = await stop_one(inv, session_id)
        if inv.out.as_json:
            inv.out.json(document or {"id": session_id, "stopped": stopped})
        elif stopped:
            inv.out.line(f"Stopped session {session_id}.")
        else:
            inv.out.line(f"Session {session_id} {why}: nothing to stop.")

    run(ctx, body, check=check)


@shared_options
def list_(ctx: typer.Context) -> None:
    """List the account's active sessions: id, size, status, elapsed, lease left, host."""

    async def body(inv: Invocation) -> None:
        inv.out.sessions(await inv.arr.list_sessions())

    run(ctx, body)


# ---------------------------------------------------------------------- the app


def build_app(
    client_for: ClientBuilder | None = None, load_block: BlockLoader | None = None
) -> typer.Typer:
    """The ``arr`` application, its commands wired to a client builder and a block loader.

    Args:
        client_for: Builds the client from the resolved settings (default:
            :class:`~arr_prefect.ArrClient`); tests pass one with an in-process transport.
        load_block: Turns ``--block NAME`` into settings fields (default: the saved
            ``RemoteRenderingCredentials`` block, through the Prefect API).

    Returns:
        The Typer application (call it to run ``arr``).
    """
    wiring = Wiring(
        client_for=client_for if client_for is not None else ArrClient,
        load_block=load_block if load_block is not None else load_saved_block,
    )
    arr = typer.Typer(
        name="arr",
        cls=ArrGroup,
        help="Azure Remote Rendering sessions, by hand: the vendor's RenderingSession.ps1,"
        " on this project's client. No Prefect server needed.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"], "obj": Scope(wiring)},
    )
    arr.callback()(root)
    arr.command(cls=ArrCommand)(token)
    sessions = typer.Typer(
        cls=ArrGroup,
        help="Create, inspect, extend, stop and list rendering sessions.",
        no_args_is_help=True,
    )
    for command in (create, get, extend, stop):
        sessions.command(cls=ArrCommand)(command)
    sessions.command("list", cls=ArrCommand)(list_)
    arr.add_typer(sessions, name="sessions")
    return arr


app = build_app()
"""``arr`` as installed: the real client and block loader."""


def main() -> None:
    """The ``arr`` console script."""
    app()
