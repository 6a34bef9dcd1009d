"""``arr-emulator``: serve the emulated ARR service (STS and both session APIs) over HTTP.

On start it prints ``arr-emulator listening on http://HOST:PORT`` to stdout (the real port
when ``--port 0`` asked for a free one), then serves until SIGINT or SIGTERM and exits 0.
Logs go to stderr. On loopback that is the only line unless an admin token was given; listening
beyond loopback, a second line ``arr-emulator admin token: TOKEN`` gives the token the
``/_emulator/`` admin API then requires (unless one came from ``--admin-token`` or
``ARR_EMULATOR_ADMIN_TOKEN``, which is not echoed).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Sequence

from arr_prefect.clock import ScaledClock, SystemClock
from arr_prefect.emulator.server import base_url_of, bind_socket, run_server
from arr_prefect.emulator.service import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_ACCOUNT_KEY,
    DEFAULT_PAGE_SIZE,
    Emulator,
)

__all__ = ["build_parser", "is_loopback", "main", "package_version"]


def package_version() -> str:
    """``arr-prefect <version>``, the installed distribution this emulator comes from."""
    try:
        return f"arr-prefect {importlib.metadata.version('arr-prefect')}"
    except importlib.metadata.PackageNotFoundError:
        # Imported from a source tree that was never installed: there is no version to say.
        return "arr-prefect (not installed: no version)"


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The ``arr-emulator`` command line: network, service, random faults, logging."""
    parser = argparse.ArgumentParser(
        prog="arr-emulator",
        description="Serve an emulated Azure Remote Rendering service (STS, v1 and"
        " 2021-01-01 session APIs, /_emulator/ admin API) on loopback.",
    )
    parser.add_argument(
        "--version", action="version", version=package_version(), help="print the version"
    )
    _add_network_options(parser.add_argument_group("network"))
    _add_service_options(parser.add_argument_group("service"))
    _add_fault_options(parser.add_argument_group("random faults (probability per request)"))
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request to stderr (off by default: it costs more than the answer)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="stderr log level (default: %(default)s)",
    )
    return parser


def _add_network_options(net: argparse._ArgumentGroup) -> None:
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    net.add_argument(
        "--admin-token",
        default=os.environ.get("ARR_EMULATOR_ADMIN_TOKEN"),
        help="token the /_emulator/ admin API requires (Authorization: Bearer TOKEN);"
        " ARR_EMULATOR_ADMIN_TOKEN keeps it out of the process list. Default: none on"
        " loopback; beyond loopback a random one, printed at start",
    )
    net.add_argument(
        "--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)"
    )


def _add_service_options(service: argparse._ArgumentGroup) -> None:
    service.add_argument(
        "--account-id", default=DEFAULT_ACCOUNT_ID, help="account GUID (default: %(default)s)"
    )
    service.add_argument(
        "--account-key",
        default=os.environ.get("ARR_EMULATOR_ACCOUNT_KEY", DEFAULT_ACCOUNT_KEY),
        help="account key; ARR_EMULATOR_ACCOUNT_KEY keeps it out of the process list"
        " (default: the emulator's fixture key)",
    )
    service.add_argument(
        "--startup-seconds",
        type=_non_negative,
        default=30.0,
        help="Starting -> Ready delay, emulated seconds (default: %(default)s)",
    )
    service.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulated seconds per real second; 1 is real time (default: %(default)s)",
    )
    service.add_argument(
        "--region",
        default="westus2",
        help="region named in hostnames and messages (default: %(default)s)",
    )
    service.add_argument(
        "--capacity-standard",
        type=int,
        default=None,
        help="most Standard sessions active at once (default: unlimited)",
    )
    service.add_argument(
        "--capacity-premium",
        type=int,
        default=None,
        help="most Premium sessions active at once (default: unlimited)",
    )
    service.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        help="the account quota: most Starting or Ready sessions per account, any size; a"
        " create beyond it is refused with 403 QuotaExceeded (default: no quota)",
    )
    service.add_argument(
        "--token-lifetime",
        type=float,
        default=86400.0,
        help="access token lifetime, emulated seconds (default: %(default)s)",
    )
    service.add_argument(
        "--page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        help="sessions per 2021-01-01 list page (default: %(default)s); smaller to test paging",
    )
    service.add_argument(
        "--seed", type=int, default=None, help="seed for ids, ports and random faults"
    )


def _add_fault_options(faults: argparse._ArgumentGroup) -> None:
    faults.add_argument("--p-throttle", type=_probability, default=0.0, help="429 with Retry-After")
    faults.add_argument("--p-server-error", type=_probability, default=0.0, help="500/502/503")
    faults.add_argument(
        "--p-slow", type=_probability, default=0.0, help="answer after --slow-seconds"
    )
    faults.add_argument(
        "--slow-seconds",
        type=_non_negative,
        default=5.0,
        help="delay of a slow answer (default: %(default)s)",
    )
    faults.add_argument(
        "--p-drop", type=_probability, default=0.0, help="connection dropped mid-answer"
    )
    faults.add_argument(
        "--p-lost-create", type=_probability, default=0.0, help="create made, answer lost"
    )
    faults.add_argument(
        "--p-session-error", type=_probability, default=0.0, help="created session ends in Error"
    )
    faults.add_argument(
        "--retry-after",
        type=int,
        default=1,
        help="Retry-After of a 429, seconds (default: %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; return the exit status (0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    if args.page_size < 1:
        parser.error("--page-size must be at least 1")
    if args.max_sessions is not None and args.max_sessions < 1:
        parser.error("--max-sessions must be at least 1")
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    admin_token: str | None = args.admin_token or None
    generated_token = admin_token is None and not is_loopback(args.host)
    if generated_token:
        # Beyond loopback anyone on the network could inject faults or read every session.
        admin_token = secrets.token_urlsafe(24)
    try:
        emulator = _emulator_from(args, admin_token)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        parser.exit(1, f"arr-emulator: cannot listen on {args.host}:{args.port}: {exc}\n")
    print(f"arr-emulator listening on {base_url_of(sock)}", flush=True)
    if generated_token:
        print(f"arr-emulator admin token: {admin_token}", flush=True)
    elif admin_token is not None:
        print(
            "arr-emulator admin API requires the token from --admin-token"
            " or ARR_EMULATOR_ADMIN_TOKEN",
            flush=True,
        )
    try:
        run_server(emulator.app, sock, log_level=args.log_level, access_log=args.access_log)
    finally:
        sock.close()
    return 0


def _emulator_from(args: argparse.Namespace, admin_token: str | None) -> Emulator:
    """The emulator the command line describes (every service and fault option)."""
    capacity = {
        size: limit
        for size, limit in (
            ("standard", args.capacity_standard),
            ("premium", args.capacity_premium),
        )
        if limit is not None
    }
    emulator = Emulator(
        {args.account_id: args.account_key},
        admin_token=admin_token,
        clock=SystemClock() if args.time_scale == 1.0 else ScaledClock(args.time_scale),
        startup_seconds=args.startup_seconds,
        region=args.region,
        capacity=capacity or None,
        token_lifetime=args.token_lifetime,
        page_size=args.page_size,
        seed=args.seed,
        max_sessions=args.max_sessions,
    )
    emulator.faults.set_random(
        p_throttle=args.p_throttle,
        p_server_error=args.p_server_error,
        p_slow=args.p_slow,
        p_drop=args.p_drop,
        p_lost_create=args.p_lost_create,
        p_session_error=args.p_session_error,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
        seed=args.seed,
    )
    return emulator


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
