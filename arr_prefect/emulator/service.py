"""The :class:`Emulator` facade: state, faults, the ASGI app and ways to serve it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from arr_prefect.clock import Clock, SystemClock
from arr_prefect.emulator.app import create_app
from arr_prefect.emulator.faults import FaultController
from arr_prefect.emulator.state import EmulatorState, RequestLog, SessionRecord

if TYPE_CHECKING:
    from arr_prefect.emulator.server import FrontEndLimits

__all__ = ["DEFAULT_ACCOUNT_ID", "DEFAULT_ACCOUNT_KEY", "DEFAULT_PAGE_SIZE", "Emulator"]

DEFAULT_ACCOUNT_ID = "11111111-1111-1111-1111-111111111111"
"""The account the CLI serves unless told otherwise."""

DEFAULT_ACCOUNT_KEY = "arr-emulator-account-key"
"""The key of :data:`DEFAULT_ACCOUNT_ID` (an emulator fixture, not a secret)."""

DEFAULT_PAGE_SIZE = 100
"""Sessions per 2021-01-01 list page. The service's page size is not documented (its
REST spec marks the list pageable by ``@nextLink`` and takes no page-size parameter);
100 is the default of Microsoft's other paged APIs (Microsoft Graph, Azure AD) and
more than an account's session quota usually allows, so a real list rarely had a second
page. Tests of paging pass a smaller one."""


class Emulator:
    """An emulated ARR service: STS, both session APIs, faults and an accounting view.

    ``clock`` defaults to real time; tests pass a :class:`~arr_prefect.VirtualClock`
    (shared with the client) so hours of lease pass in milliseconds. ``capacity`` caps the
    sessions of each size active at once (``{"standard": 2}``); a create beyond it still
    succeeds and the session goes to Error, as the service did (ARR_API.md §5).
    ``max_sessions`` is the account quota: a create beyond it is refused with 403
    ``QuotaExceeded`` and makes no session (see :mod:`arr_prefect.emulator.state`).

    Every touch of the state goes through :attr:`lock`, so a uvicorn thread
    (:meth:`serve`) and a test thread can use the same emulator.
    """

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        *,
        clock: Clock | None = None,
        startup_seconds: float = 30.0,
        region: str = "westus2",
        capacity: Mapping[str, int] | None = None,
        token_lifetime: float = 86400.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        seed: int | None = None,
        max_sessions: int | None = None,
        admin_token: str | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.lock = threading.RLock()
        self.state = EmulatorState(
            clock=self.clock,
            accounts=accounts
            if accounts is not None
            else {DEFAULT_ACCOUNT_ID: DEFAULT_ACCOUNT_KEY},
            startup_seconds=startup_seconds,
            region=region,
            capacity=capacity,
            token_lifetime=token_lifetime,
            seed=seed,
            max_sessions=max_sessions,
        )
        self.page_size = page_size
        self.admin_token = admin_token
        """When set, ``/_emulator/`` (but health) requires ``Authorization: Bearer <it>``."""
        self.faults = FaultController(seed=seed)
        self._requests = RequestLog()
        self.app = create_app(self)

    def transport(self) -> httpx.ASGITransport:
        """An in-process transport: ``httpx.AsyncClient(transport=emu.transport(), ...)``.

        A ``drop`` or ``lost_create`` fault reaches the client as an
        :class:`httpx.TransportError` (``EmulatedConnectionDrop``).
        """
        return httpx.ASGITransport(app=self.app)

    def ledger(self) -> dict[str, Any]:
        """Every session ever created with its billing, and ``running`` (the same JSON as
        ``GET /_emulator/ledger``)."""
        with self.lock:
            return self.state.ledger()

    def running(self) -> list[SessionRecord]:
        """Sessions still Starting or Ready: what a test expects to be empty at the end."""
        with self.lock:
            return self.state.running()

    def sessions(self) -> list[SessionRecord]:
        """Every session ever created, oldest first."""
        with self.lock:
            return self.state.sessions()

    def request_counts(self) -> dict[str, dict[str, int]]:
        """``{route: {status: count}}``; a dropped connection counts as ``"dropped"``."""
        with self.lock:
            return self._requests.counts()

    def request_count(self, route: str, status: int | str | None = None) -> int:
        """How many requests hit ``route`` (answered with ``status`` when given)."""
        with self.lock:
            return self._requests.count(route, status)

    def request_log_record(self, route: str, status: int | str) -> None:
        with self.lock:
            self._requests.record(route, status)

    def expire_tokens(self) -> int:
        """Invalidate every access token issued so far; return how many were live."""
        with self.lock:
            return self.state.expire_tokens()

    @contextmanager
    def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, limits: FrontEndLimits | None = None
    ) -> Iterator[str]:
        """Serve over real HTTP in a background thread; yield ``http://host:port``.

        ``port=0`` picks a free port. The server stops (and the thread ends) on exit.
        ``limits``: read deadlines and the connection cap (a front end's defaults).
        With a :class:`~arr_prefect.VirtualClock`, advance it through
        ``POST /_emulator/clock/advance`` while serving, so that sleepers (``slow``
        faults) wake on the server's event loop.
        """
        from arr_prefect.emulator.server import serve_in_thread

        with serve_in_thread(self.app, host=host, port=port, limits=limits) as base_url:
            yield base_url

    def __repr__(self) -> str:
        return f"Emulator(clock={self.clock!r}, region={self.state.region!r})"
