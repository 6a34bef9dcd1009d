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

Exit status: 0 success; 1 a service or network error (the message carries the MS-CV);
2 bad usage or bad input, caught before any request changes anything; 3 a session that
ended (Error, Expired, or Stopped) while ``--wait`` waited for it; 130 interrupted.

No Prefect server is needed, and Prefect is imported only for ``--block``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from arr_prefect.cli.config import (
    BlockLoader,
    ConfigSources,
    account_domain_fields,
    resolve_settings,
)
from arr_prefect.cli.durations import format_duration, parse_duration
from arr_prefect.cli.output import Output, session_json
from arr_prefect.client import ArrClient
from arr_prefect.errors import (
    ArrError,
    ArrHTTPError,
    ArrTransportError,
    InvalidInputError,
    InvalidLeaseError,
    ReadyTimeoutError,
    SessionEndedError,
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
from arr_prefect.settings import ArrSettings

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_SESSION_ENDED", "EXIT_USAGE", "build_app", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SESSION_ENDED = 3
EXIT_INTERRUPTED = 130

DEFAULT_LEASE = timedelta(hours=4)
"""``create``'s lease when neither ``--lease`` nor ``maxLeaseTime`` says: the vendor script's."""

ClientBuilder = Callable[[ArrSettings], ArrClient]
"""Builds the client for resolved settings; tests inject one with an in-process transport."""

CONFIG_PANEL = "Configuration (highest first: flags, --block, ARR_* / .env, --config)"

AccountIdOpt = Annotated[
    str | None,
    typer.Option("--account-id", help="The account's GUID.", rich_help_panel=CONFIG_PANEL),
]
AccountDomainOpt = Annotated[
    str | None,
    typer.Option(
        "--account-domain",
        help="The account's domain (token service): a region such as westus2, a domain such"
        " as westus2.mixedreality.azure.com, or a full URL.",
        rich_help_panel=CONFIG_PANEL,
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option(
        "--region", help="The session API's region, e.g. westus2.", rich_help_panel=CONFIG_PANEL
    ),
]
ServiceUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--service-url",
        help="The session API's base URL (plain http only on loopback, e.g. arr-emulator).",
        rich_help_panel=CONFIG_PANEL,
    ),
]


class ApiVersionChoice(StrEnum):
    """The API versions the client speaks."""

    V1 = "v1"
    V2021 = "2021-01-01"


ApiVersionOpt = Annotated[
    ApiVersionChoice | None,
    typer.Option(
        "--api-version",
        help="The session API version (default: ARR_API_VERSION, else v1).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
BlockOpt = Annotated[
    str | None,
    typer.Option(
        "--block",
        metavar="NAME",
        help="A saved RemoteRenderingCredentials block (needs the Prefect API).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="ARRCONFIG.JSON",
        help="The vendor's arrconfig.json (accountSettings, renderingSessionSettings).",
        dir_okay=False,
        rich_help_panel=CONFIG_PANEL,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="One JSON document on stdout (2021-01-01 property names)."),
]
SessionIdArg = Annotated[str, typer.Argument(metavar="ID", help="The session's ID.")]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait", help="Wait until Ready, or until the session ends (exit status 3)."),
]


@dataclass(frozen=True)
class Common:
    """The configuration options and ``--json``, given before or after the command."""

    account_id: str | None = None
    account_domain: str | None = None
    region: str | None = None
    service_url: str | None = None
    api_version: ApiVersionChoice | None = None
    block: str | None = None
    config: Path | None = None
    as_json: bool = False

    def under(self, leaf: Common) -> Common:
        """These options (the group's), overridden by the command's own."""
        changes: dict[str, Any] = {
            f.name: getattr(leaf, f.name)
            for f in fields(leaf)
            if getattr(leaf, f.name) not in (None, False)
        }
        return replace(self, **changes)

    def sources(self) -> ConfigSources:
        flags: dict[str, Any] = {}
        if self.account_id is not None:
            flags["account_id"] = self.account_id
        if self.account_domain is not None:
            flags.update(account_domain_fields(self.account_domain, "--account-domain"))
        if self.region is not None:
            flags["region"] = self.region
        if self.service_url is not None:
            flags["service_url"] = self.service_url
        if self.api_version is not None:
            flags["api_version"] = self.api_version.value
        return ConfigSources(flags=flags, block=self.block, config_file=self.config)


def _load_block(name: str) -> dict[str, Any]:
    """The account of a saved credentials block (imports Prefect, so only on demand)."""
    from arr_prefect.cli.blocks import settings_from_block

    return settings_from_block(name)


@dataclass
class Invocation:
    """One command's resolved settings, config file, output and client."""

    settings: ArrSettings
    config: Any
    out: Output
    arr: ArrClient


class _Done(Exception):
    """Leave with an exit status, after the message was printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _stop_json(session: Session, stopped: bool) -> dict[str, Any]:
    """What ``arr sessions stop --json`` prints for a session: the session, and whether
    this command stopped it."""
    return {**session_json(session), "stopped": stopped}


def _interactive() -> bool:
    """True when a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _bad_input(message: str) -> NoReturn:
    raise InvalidInputError(message)


def build_app(
    client_for: ClientBuilder | None = None, load_block: BlockLoader | None = None
) -> typer.Typer:
    """The ``arr`` application. ``client_for`` builds the client from the resolved settings
    (default: :class:`~arr_prefect.ArrClient`); ``load_block`` turns ``--block NAME`` into
    settings fields (default: the saved RemoteRenderingCredentials block)."""
    make_client: ClientBuilder = client_for if client_for is not None else ArrClient
    block_loader: BlockLoader = load_block if load_block is not None else _load_block

    app = typer.Typer(
        name="arr",
        help="Azure Remote Rendering sessions, by hand: the vendor's RenderingSession.ps1,"
        " on this project's client. No Prefect server needed.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    sessions = typer.Typer(
        help="Create, inspect, extend, stop and list rendering sessions.",
        no_args_is_help=True,
    )
    app.add_typer(sessions, name="sessions")

    @app.callback()
    def root(
        ctx: typer.Context,
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        ctx.obj = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )

    def run(
        ctx: typer.Context,
        leaf: Common,
        body: Callable[[Invocation], Awaitable[None]],
        *,
        check: Callable[[], None] | None = None,
    ) -> None:
        """Resolve settings, run ``body`` with a client, and map failures to exit statuses."""
        common = (ctx.obj if isinstance(ctx.obj, Common) else Common()).under(leaf)
        out = Output(as_json=common.as_json)
        code = EXIT_OK
        try:
            if check is not None:
                check()
            settings, config = resolve_settings(common.sources(), block_loader)

            async def main() -> None:
                async with make_client(settings) as arr:
                    await body(Invocation(settings, config, out, arr))

            asyncio.run(main())
        except _Done as done:
            code = done.code
        except InvalidInputError as exc:
            out.error(str(exc))
            code = EXIT_USAGE
        except ReadyTimeoutError as exc:
            out.error(str(exc))
            out.note(
                f"The session is still starting, and billed once Ready: check it with"
                f" `arr sessions get {exc.session_id} --wait`, or stop it with"
                f" `arr sessions stop {exc.session_id}`."
            )
            code = EXIT_FAILED
        except SessionEndedError as exc:
            if exc.session is not None:
                out.session(exc.session)
            out.error(str(exc))
            code = EXIT_SESSION_ENDED
        except ArrTransportError as exc:
            out.error(f"{exc} (no answer from the service, so no MS-CV)")
            code = EXIT_FAILED
        except ArrHTTPError as exc:
            out.error(str(exc))
            code = EXIT_FAILED
        except ArrError as exc:
            out.error(str(exc))
            code = EXIT_FAILED
        except KeyboardInterrupt:
            out.error("interrupted")
            code = EXIT_INTERRUPTED
        if code != EXIT_OK:
            raise typer.Exit(code)

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

    # ------------------------------------------------------------------ token

    @app.command()
    def token(
        ctx: typer.Context,
        show_secret: Annotated[
            bool,
            typer.Option("--show-secret", help="Also print the token itself (a secret)."),
        ] = False,
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Get an access token from the token service and print when it expires.

        The token itself is printed only with --show-secret (on stdout, alone, so
        TOKEN=$(arr token --show-secret) works; the expiry then goes to stderr).
        """
        leaf = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )

        async def body(inv: Invocation) -> None:
            tok = await inv.arr.get_access_token()
            now = inv.arr.clock.time()
            left = tok.expires_in(now)
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

        run(ctx, leaf, body)

    # ------------------------------------------------------------------ sessions

    @sessions.command()
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
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a rendering session (billed from Ready until stopped or its lease ends)."""
        leaf = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )

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
                if inv.settings.api_version == "v1":
                    _bad_input(
                        "--id needs --api-version 2021-01-01: with v1 the service chooses"
                        " the session's ID"
                    )
                validate_session_id(session_id)
            session = await inv.arr.create_session(
                lease=total, size=chosen_size, session_id=session_id
            )
            inv.out.note(
                f"Created session {session.id} ({chosen_size.value},"
                f" lease {format_duration(total)})."
            )
            if wait:
                session = await wait_for_ready(inv, session.id)
            inv.out.session(session)
            if not wait and not inv.out.as_json:
                inv.out.note(f"Wait for it with `arr sessions get {session.id} --wait`.")

        run(ctx, leaf, body)

    @sessions.command()
    def get(
        ctx: typer.Context,
        session_id: SessionIdArg,
        wait: WaitOpt = False,
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Show a session's properties; with --wait, first wait until it is Ready."""
        leaf = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )

        async def body(inv: Invocation) -> None:
            if wait:
                session = await wait_for_ready(inv, session_id)
            else:
                session = await inv.arr.get_session(session_id)
            inv.out.session(session)

        def check() -> None:
            validate_session_id(session_id)

        run(ctx, leaf, body, check=check)

    @sessions.command()
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
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Set a session's total lease (--lease), or give it more time (--by).

        The API takes the total since the session became Ready, never an increment:
        --lease 2:00:00 on a session that has run 1h leaves it 1h; --by 30m adds 30
        minutes to whatever it has left. The most a session can have is 24 hours.
        """
        leaf = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )
        parsed: dict[str, timedelta] = {}

        def check() -> None:
            validate_session_id(session_id)
            if (lease is None) == (by is None):
                _bad_input("give exactly one of --lease H:MM:SS (the new total) or --by DURATION")
            if lease is not None:
                parsed["lease"] = parse_lease(parse_duration(lease))
            if by is not None:
                step = parse_duration(by)
                if step <= timedelta(0):
                    raise InvalidLeaseError(f"--by must be longer than zero, got {by!r}")
                parsed["by"] = step

        async def body(inv: Invocation) -> None:
            current = await inv.arr.get_session(session_id)
            if not current.status.is_active:
                raise ArrError(
                    f"session {session_id} is {current.status.value}: a session that is over"
                    " cannot be extended" + (f" ({current.message})" if current.message else "")
                )
            elapsed = current.elapsed or timedelta(0)
            if "lease" in parsed:
                target = parsed["lease"]
                if target <= elapsed:
                    _bad_input(
                        f"--lease {format_duration(target)} is not more than the"
                        f" {format_duration(elapsed)} session {session_id} has already run:"
                        " the lease is the total since Ready, so the session would end at"
                        f" once. To give it more time, use --by (e.g. --by 30m)"
                    )
            else:
                base = current.max_lease if current.max_lease is not None else elapsed
                target = base + parsed["by"]
                if target > MAX_LEASE:
                    if base >= MAX_LEASE:
                        _bad_input(
                            f"session {session_id} already has the longest lease the service"
                            " grants (24 hours)"
                        )
                    inv.out.note("The lease is capped at 24 hours, the service's limit.")
                    target = MAX_LEASE
            updated = await inv.arr.extend_session(session_id, target)
            inv.out.note(
                f"Lease of session {session_id}: {format_duration(current.max_lease)}"
                f" -> {format_duration(updated.max_lease)}"
                f" ({format_duration(updated.remaining)} left)."
            )
            inv.out.session(updated)

        run(ctx, leaf, body, check=check)

    @sessions.command()
    def stop(
        ctx: typer.Context,
        session_id: Annotated[
            str | None, typer.Argument(metavar="[ID]", help="The session to stop.")
        ] = None,
        all_sessions: Annotated[
            bool, typer.Option("--all", help="Stop every active session of the account.")
        ] = False,
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="Do not ask before stopping --all.")
        ] = False,
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Stop a session, or every active session with --all --yes.

        Stopping is idempotent: a session already over, or unknown, is reported and is
        not an error. With --json: the session as it is after the stop, with "stopped"
        added (false: there was nothing to stop; an unknown ID gives only "id" and
        "stopped"), or an array of them for --all.
        """
        leaf = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )

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
            if session_id is not None:
                stopped, why, document = await stop_one(inv, session_id)
                if inv.out.as_json:
                    inv.out.json(document or {"id": session_id, "stopped": stopped})
                elif stopped:
                    inv.out.line(f"Stopped session {session_id}.")
                else:
                    inv.out.line(f"Session {session_id} {why}: nothing to stop.")
                return
            active = await inv.arr.list_sessions()
            if not yes:
                inv.out.sessions(active)
                if active and not typer.confirm(f"Stop these {len(active)} session(s)?"):
                    inv.out.note("Nothing was stopped.")
                    raise _Done(EXIT_USAGE)
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
                        f"Stopped session {session.id}."
                        if stopped
                        else f"Session {session.id} {why}."
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
                raise _Done(EXIT_FAILED)

        run(ctx, leaf, body, check=check)

    @sessions.command("list")
    def list_(
        ctx: typer.Context,
        account_id: AccountIdOpt = None,
        account_domain: AccountDomainOpt = None,
        region: RegionOpt = None,
        service_url: ServiceUrlOpt = None,
        api_version: ApiVersionOpt = None,
        block: BlockOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List the account's active sessions: id, size, status, elapsed, lease left, host."""
        leaf = Common(
            account_id, account_domain, region, service_url, api_version, block, config, as_json
        )

        async def body(inv: Invocation) -> None:
            inv.out.sessions(await inv.arr.list_sessions())

        run(ctx, leaf, body)

    return app


app = build_app()


def main() -> None:
    """The ``arr`` console script."""
    app()
