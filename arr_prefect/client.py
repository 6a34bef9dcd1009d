"""The async ARR session client, for both API versions.

::

    async with ArrClient(load_settings()) as arr:
        session = await arr.create_session(lease=timedelta(minutes=30), size="standard")
        try:
            session = await arr.wait_until_ready(session.id)
            ...  # render
        finally:
            await arr.stop_session(session.id)

Retries live here and only here (never also in Prefect): connection failures, 5xx and 429
are retried with capped, jittered exponential back-off, honouring ``Retry-After``, up to
``settings.max_attempts`` attempts. Everything the service can answer with is turned into
:class:`~arr_prefect.models.Session` models or one of the exceptions of
:mod:`arr_prefect.errors`; callers never see an ``httpx.Response``.

What differs between API versions (paths, bodies, parsing, the create and extend steps)
lives in one module per version behind one interface (:mod:`arr_prefect.dialects`): the
client holds its settings' dialect (``arr.dialect``) and never compares version strings.

API facts this module relies on (ARR_API.md):

- A non-idempotent request (v1's create) is never re-sent after an ambiguous failure:
  the dialect is told (:class:`~arr_prefect.dialects.AmbiguousOutcome`) and reconciles.
- The lease sent on update is the **total** since the session became Ready, never an
  increment (:meth:`ArrClient.extend_session_by` does the arithmetic).
- Stop is idempotent from the caller's view: already stopped, expired or unknown is success.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote, urlencode

import httpx

from arr_prefect._pool import HEADERS, Pool, PoolKey, pool_for, shared_ssl_context
from arr_prefect.auth import (
    PROCESS_TOKEN_CACHE,
    AccessToken,
    ArrAuth,
    TokenCache,
    TokenSource,
    jwt_expiry,
)
from arr_prefect.clock import Clock, default_clock
from arr_prefect.dialects import AmbiguousOutcome, Dialect, dialect_for
from arr_prefect.dialects.v2021_01_01 import new_session_id
from arr_prefect.errors import (
    ArrHTTPError,
    ArrTransportError,
    QuotaExceededError,
    RateLimitedError,
    ReadyTimeoutError,
    SessionExpiredError,
    SessionFailedError,
    SessionNotFoundError,
    SessionStoppedError,
    error_for_status,
)
from arr_prefect.models import (
    MAX_LEASE,
    Session,
    SessionSize,
    SessionStatus,
    parse_lease,
    validate_session_id,
)
from arr_prefect.settings import ArrSettings, load_settings
from arr_prefect.units import format_duration

__all__ = [
    "ArrClient",
    "ClientFactory",
    "CreateAttempt",
    "StatusCallback",
    "client_factory",
    "each_create_attempt",
    "new_session_id",
    "open_client",
    "use_client_factory",
]

logger = logging.getLogger("arr_prefect.client")

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# How many sessions' last-seen properties a client keeps (the oldest are forgotten).
_SEEN_SESSIONS = 1024

_RNG = random.Random()
"""The jitter and v1 lease fingerprints of clients given no ``rng``: one generator per
process (seeding one costs about 10 us, a tenth of a client's making), seeded afresh in
a forked child so that no two processes draw the same."""
if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_RNG.seed)


@functools.lru_cache(maxsize=64)
def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, parsed once per URL (a parse costs ~10 us)."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


StatusCallback = Callable[[SessionStatus | None, Session], Awaitable[None] | None]
"""Called by :meth:`ArrClient.wait_until_ready` when the status changes: (old, session)."""

CreateAttempt = Callable[[Awaitable[Session]], Awaitable[Session]]
"""Runs one attempt of a create (given as an awaitable) and returns what it returns."""

_create_attempt: ContextVar[CreateAttempt | None] = ContextVar(
    "arr_prefect_create_attempt", default=None
)


@contextlib.contextmanager
def each_create_attempt(run: CreateAttempt) -> Iterator[None]:
    """Run every create attempt made in this context through ``run``; not the waits between.

    :meth:`ArrClient.create_session` sends a create refused for the account's quota again
    after a wait. A caller that shields a create from cancellation, so that a session the
    service made is always learnt (``rendering_session`` does), shields each attempt this
    way and leaves the waits for the quota cancellable: while the client waits, no request
    is out and no session exists.

    Args:
        run: Awaits one attempt (e.g. shielded, with a time bound) and returns its session.

    Yields:
        Nothing: ``run`` applies until the ``with`` block ends (to the tasks started in
        it too, which copy the context).
    """
    token = _create_attempt.set(run)
    try:
        yield
    finally:
        _create_attempt.reset(token)


def _never_sent(exc: httpx.TransportError) -> bool:
    """True when the request provably never reached the service."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class ArrClient:
    """An async client of the ARR session API (``v1`` or ``2021-01-01``).

    ``transport`` is injected for tests and the in-process emulator
    (``httpx.ASGITransport(app)``); ``clock`` drives back-off, polling and token expiry.
    :attr:`dialect` is the API version's dialect: ask it what differs between versions
    (``arr.dialect.client_chooses_session_id``) rather than comparing ``api_version``.

    A client is a light handle (building one takes well under a millisecond): without an
    injected transport, every client of the same account and endpoints in an event loop
    sends through one shared, bounded connection pool (:mod:`arr_prefect._pool`), so a
    client per task call costs no new connections. Closing a client leaves the shared
    pool open for the others; it closes with its event loop.
    """

    def __init__(
        self,
        settings: ArrSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        token_cache: TokenCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.account_id, account_key = self.settings.require_account()
        self.api_version = self.settings.api_version
        self.dialect: Dialect = dialect_for(self.api_version)
        """The API version's paths, bodies, parsing and the steps that differ."""
        # The dialect's query, written into each URL once: httpx rebuilds the URL for any
        # params given (tens of microseconds a request).
        self._query = f"?{urlencode(self.dialect.query)}" if self.dialect.query else ""
        self._service = self.settings.service_base_url
        self._origin = _origin(self._service)
        self._sts = self.settings.sts_base_url
        self.clock: Clock = clock if clock is not None else default_clock()
        self._rng = rng if rng is not None else _RNG
        self.reaches_service_directly = transport is None
        """False when a transport was injected (an in-process emulator): another process
        with the same settings could not reach what this client talks to."""
        self._timeout = httpx.Timeout(
            self.settings.request_timeout, connect=self.settings.connect_timeout
        )
        # An injected transport (a test's, the in-process emulator's) gets its own httpx
        # client, closed with this one; otherwise the loop's shared pool is used.
        self._own_http: httpx.AsyncClient | None = None
        if transport is not None:
            self._own_http = httpx.AsyncClient(
                transport=transport,
                verify=shared_ssl_context(),
                headers=HEADERS,
                follow_redirects=False,
            )
        self._pool_key: PoolKey = (self.account_id, self._service, self._sts)
        self._pooled: tuple[asyncio.AbstractEventLoop, Pool] | None = None
        # The last properties seen of each session, and when: what v1's empty extend
        # answer is completed with (see extend_session).
        self._seen: dict[str, tuple[Session, float]] = {}
        cache = token_cache if token_cache is not None else PROCESS_TOKEN_CACHE
        self._tokens = TokenSource(
            cache=cache,
            key=TokenCache.key(self._sts, self.account_id, account_key),
            fetch=self._fetch_token,
            clock=self.clock,
            refresh_margin=self.settings.token_refresh_margin,
        )
        self._auth = ArrAuth(self._tokens)
        self._calls = _DialectCalls(self)

    def __repr__(self) -> str:
        return (
            f"ArrClient(service={self._service!r}, account_id={self.account_id!r},"
            f" api_version={self.api_version!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close this client's own connections (the shared pool stays open for others)."""
        if self._own_http is not None:
            await self._own_http.aclose()

    async def _pool(self) -> Pool | None:
        """The loop's shared pool (None with an injected transport)."""
        if self._own_http is not None:
            return None
        loop = asyncio.get_running_loop()
        pooled = self._pooled
        if pooled is None or pooled[0] is not loop or pooled[1].http.is_closed:
            pooled = self._pooled = (loop, await pool_for(self._pool_key))
        return pooled[1]

    async def _request(
        self, method: str, url: str | httpx.URL, *, authenticated: bool, **kwargs: Any
    ) -> httpx.Response:
        auth = self._auth if authenticated else httpx.USE_CLIENT_DEFAULT
        pool = await self._pool()
        if pool is None:
            assert self._own_http is not None
            return await self._own_http.request(
                method, url, auth=auth, timeout=self._timeout, **kwargs
            )
        if not authenticated:
            # The token fetch takes no slot: requests holding slots may be waiting for it
            # (in ArrAuth) before they send, and must not wait for each other.
            return await pool.http.request(method, url, auth=auth, timeout=self._timeout, **kwargs)
        async with pool.lane() as http:
            return await http.request(method, url, auth=auth, timeout=self._timeout, **kwargs)

    # ------------------------------------------------------------------ plumbing

    def _sessions_url(self, *parts: str) -> str:
        return self._service + self.dialect.sessions_path(self.account_id, *parts) + self._query

    def _backoff(self, attempt: int) -> float:
        ceiling: float = min(
            self.settings.backoff_max, self.settings.backoff_initial * 2 ** (attempt - 1)
        )
        return ceiling * self._rng.uniform(0.5, 1.0)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - self.clock.time()
        return max(0.0, min(seconds, self.settings.retry_after_max))

    async def _send(
        self,
        operation: str,
        method: str,
        url: str | httpx.URL,
        *,
        json: Any = None,
        idempotent: bool = True,
        authenticated: bool = True,
        headers: dict[str, str] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        """Send with bounded retries; return the final response (error statuses included).

        For a non-idempotent request an answer that may hide a carried-out request (a broken
        connection after sending, a 5xx) raises :class:`AmbiguousOutcome` instead of being
        retried; a 429 or a connection that was never made are retried as usual.
        ``on_retry`` is told before each retry (the request is about to be sent again).
        ``url`` may be parsed already (an ``httpx.URL``): httpx then does not parse it again.
        """
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                response = await self._request(
                    method,
                    url,
                    authenticated=authenticated,
                    json=json,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                if not idempotent and not _never_sent(exc):
                    raise AmbiguousOutcome(
                        f"{type(exc).__name__}: {exc}",
                        may_still_happen=isinstance(exc, httpx.TimeoutException),
                    ) from exc
                if attempt == attempts:
                    raise ArrTransportError(
                        f"{operation} failed: no answer from the service after {attempts}"
                        f" attempts ({type(exc).__name__}: {exc or 'connection failed'};"
                        f" {method} {url})",
                        operation=operation,
                        method=method,
                        url=str(url),
                    ) from exc
                delay = self._backoff(attempt)
                logger.warning(
                    "%s: %s, retrying in %.1fs (attempt %d/%d)",
                    operation,
                    type(exc).__name__,
                    delay,
                    attempt,
                    attempts,
                )
                if on_retry is not None:
                    on_retry()
                await self.clock.sleep(delay)
                continue
            if response.status_code not in _RETRYABLE_STATUS:
                return response
            await response.aread()
            if not idempotent and response.status_code != 429:
                raise AmbiguousOutcome(f"HTTP {response.status_code}")
            if attempt == attempts:
                return response
            retry_after = self._retry_after(response)
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.warning(
                "%s: HTTP %d (MS-CV %s), retrying in %.1fs (attempt %d/%d)",
                operation,
                response.status_code,
                response.headers.get("MS-CV", "none"),
                delay,
                attempt,
                attempts,
            )
            if on_retry is not None:
                on_retry()
            await self.clock.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, operation: str, response: httpx.Response) -> ArrHTTPError:
        code: str | None = None
        message: str | None = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
            message = body["error"].get("message")
        elif isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]
        elif response.text:
            message = response.text.strip()[:300]
        return error_for_status(response.status_code, str(code) if code is not None else None)(
            operation=operation,
            method=response.request.method,
            url=str(response.request.url),
            status_code=response.status_code,
            code=str(code) if code is not None else None,
            service_message=str(message) if message is not None else None,
            ms_cv=response.headers.get("MS-CV"),
            retry_after=self._retry_after(response),
        )

    async def _call(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        expect: Iterable[int],
        json: Any = None,
        idempotent: bool = True,
        on_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        response = await self._send(
            operation,
            method,
            url,
            json=json,
            idempotent=idempotent,
            on_retry=on_retry,
        )
        if response.status_code not in set(expect):
            await response.aread()
            raise self._error(operation, response)
        return response

    # ------------------------------------------------------------------ token

    async def _fetch_token(self) -> AccessToken:
        _, key = self.settings.require_account()
        url = f"{self._sts}/accounts/{quote(self.account_id, safe='')}/token"
        response = await self._send(
            "get access token",
            "GET",
            url,
            authenticated=False,
            headers={"Authorization": f"Bearer {self.account_id}:{key.get_secret_value()}"},
        )
        if response.status_code != 200:
            raise self._error("get access token", response)
        try:
            raw = response.json()["AccessToken"]
        except (ValueError, KeyError, TypeError):
            raise self._error("get access token (no AccessToken in the answer)", response) from None
        expires = jwt_expiry(raw)
        if expires is None:
            logger.warning("the access token has no readable exp claim; caching it for 10 min")
            expires = datetime.fromtimestamp(self.clock.time() + 600, tz=UTC)
        return AccessToken(token=raw, expires_at=expires, account_id=self.account_id)

    async def get_access_token(self) -> AccessToken:
        """A valid access token (cached per process until shortly before its ``exp``)."""
        return await self._tokens.get()

    # ------------------------------------------------------------------ sessions

    def _session_in(self, operation: str, response: httpx.Response) -> Session:
        """The session in a success answer; one that cannot be read is an ArrHTTPError."""
        try:
            return self.dialect.parse_session(response.content)
        except ValueError:
            # Not JSON (a proxy's HTML page), a missing field, an unknown status...
            raise self._error(f"{operation} (unreadable answer)", response) from None

    async def create_session(
        self,
        *,
        lease: timedelta | str | int | float,
        size: SessionSize | str = SessionSize.STANDARD,
        models: Sequence[str] = (),
        session_id: str | None = None,
    ) -> Session:
        """Create a session; it starts in ``Starting``. Returns as soon as the ID is known.

        ``lease`` is the total lease (a ``timedelta``, a TimeSpan string or minutes). With
        the 2021-01-01 API ``session_id`` is the client's choice (a fresh one by default)
        and the create is retried safely. With v1 the service chooses the ID and create is
        not idempotent: after a lost answer the client looks for the session its request
        made (each attempt's lease carries a sub-second fingerprint) and adopts it, and
        re-posts only when the service provably made none. (``dialect.create`` does each.)

        A create refused because the account is at its session quota (403
        ``QuotaExceeded``) made no session, so it is sent again, on either API version,
        until a session of the account ends or ``settings.quota_wait`` seconds have passed
        (:meth:`_waiting_for_quota`); then :class:`QuotaExceededError` is raised.
        """
        total = parse_lease(lease)
        chosen = SessionSize.parse(size)
        return await self._waiting_for_quota(
            lambda: self.dialect.create(
                self._calls, lease=total, size=chosen, models=models, session_id=session_id
            )
        )

    async def _waiting_for_quota(self, create: Callable[[], Awaitable[Session]]) -> Session:
        """Run ``create`` again while the service refuses it for the account's quota.

        A 403 ``QuotaExceeded`` is a definite answer: no session was made, so posting again
        is safe on v1 too (each attempt carries the caller's lease fingerprint when it chose
        one, as the session guard's does, else a fresh one). The quota frees when a session
        of the account ends, which takes minutes (e.g. a lost host's sessions, until the
        reaper stops them), so the waits start at the poll interval the service asks for
        (5-10 s) and double up to ``backoff_max``; a ``Retry-After`` is honoured. Each wait
        is a plain sleep on the client's clock, so a cancel ends it at once (only the
        attempts go through :func:`each_create_attempt`); ``settings.quota_wait`` seconds
        after the first refusal the refusal is raised, saying how long the client waited.
        """
        budget = self.settings.quota_wait
        run = _create_attempt.get()
        first_refusal: float | None = None
        refusals = 0
        while True:
            try:
                return await (create() if run is None else run(create()))
            except QuotaExceededError as refused:
                # The wait counts from the first refusal (not from the first request).
                now = self.clock.time()
                first_refusal = now if first_refusal is None else first_refusal
                waited = now - first_refusal
                if waited >= budget:
                    raise (refused.after_waiting(waited) if refusals else refused) from None
                refusals += 1
                delay = min(
                    refused.retry_after
                    if refused.retry_after is not None
                    else self._quota_backoff(refusals),
                    budget - waited,
                )
                logger.warning(
                    "%s: account at its session quota (403 QuotaExceeded); trying again in %s"
                    " (%s of %s waited)",
                    refused.operation,
                    format_duration(delay),
                    format_duration(waited),
                    format_duration(budget),
                )
                await self.clock.sleep(delay)

    def _quota_backoff(self, refusals: int) -> float:
        """The wait after the ``refusals``-th quota refusal: from the poll interval,
        doubling up to ``backoff_max``, jittered so that waiting runs spread out."""
        first = self.settings.poll_interval
        ceiling = max(first, self.settings.backoff_max)
        return min(ceiling, first * 2.0 ** min(refusals - 1, 16)) * self._rng.uniform(0.75, 1.0)

    async def get_session(self, session_id: str) -> Session:
        """The session's current properties (404: :class:`SessionNotFoundError`)."""
        session, _ = await self._get_session(session_id)
        return session

    async def _get_session(self, session_id: str) -> tuple[Session, str | None]:
        """The session and the answer's MS-CV, for errors raised from its status."""
        sid = validate_session_id(session_id)
        url = self._sessions_url(*self.dialect.properties_parts(sid))
        response = await self._call("get session", "GET", url, expect=(200,))
        session = self._remember(self._session_in("get session", response))
        return session, response.headers.get("MS-CV")

    def _remember(self, session: Session) -> Session:
        """Note ``session`` as the latest known state of its ID (at the clock's now)."""
        seen = self._seen
        seen.pop(session.id, None)
        seen[session.id] = (session, self.clock.time())
        if len(seen) > _SEEN_SESSIONS:
            del seen[next(iter(seen))]
        return session

    async def iter_sessions(self) -> AsyncIterator[Session]:
        """Every active session of the account, following ``@nextLink`` pages."""
        async for page in self._pages():
            for session in page:
                yield session

    async def list_sessions(self) -> list[Session]:
        """Every active (Starting or Ready) session of the account, all pages."""
        pool = await self._pool()
        # A list holds what it has read until its last page: a few at a time per pool.
        async with pool.lists if pool is not None else contextlib.nullcontext():
            sessions: list[Session] = []
            async for page in self._pages():
                sessions.extend(page)
        return sessions

    async def _pages(self) -> AsyncIterator[list[Session]]:
        """The sessions of each list page, each page read in one validation."""
        url: str | httpx.URL = self._sessions_url()
        seen: set[str] = set()
        while True:
            response = await self._send("list sessions", "GET", url)
            if response.status_code != 200:
                await response.aread()
                raise self._error("list sessions", response)
            try:
                page, next_link = self.dialect.parse_page(response.content)
            except ValueError as unreadable:
                # Says which item and field (a page holds up to a thousand sessions).
                raise self._error(
                    f"list sessions (unreadable answer: {unreadable})", response
                ) from None
            yield page
            if not next_link or next_link in seen:
                return
            seen.add(next_link)
            # Parsed once, and sent parsed: httpx parses a string URL again for every
            # request (a parse costs ~16 us, checking each character of the link).
            link = httpx.URL(next_link)
            if link.is_relative_url:
                link = httpx.URL(url).join(link)
            url = link
            # The bearer token goes with the request: a link to another origin (or a
            # downgrade to plain http on the same host) must not receive it.
            if (link.scheme, link.host, link.port) != self._origin:
                raise ArrTransportError(
                    f"list sessions failed: @nextLink points to another origin ({link})",
                    operation="list sessions",
                    method="GET",
                    url=str(link),
                )

    async def extend_session(
        self, session_id: str, max_lease: timedelta | str | int | float
    ) -> Session:
        """Set the session's **total** lease (counted from Ready), and return the session.

        The service takes the total, not an increment: to add an hour to a one-hour session,
        send two hours (or use :meth:`extend_session_by`).
        """
        return await self.dialect.extend(
            self._calls, validate_session_id(session_id), parse_lease(max_lease)
        )

    async def extend_session_by(
        self, session_id: str, duration: timedelta | str | int | float
    ) -> Session:
        """Make the lease end ``duration`` from now, accounting for the time already elapsed.

        Sends ``elapsed + duration`` as the new total (capped at 24 h), and nothing when the
        lease already reaches that far. 2021-01-01 reports elapsed time in whole minutes,
        rounded down, so one more minute is added there to never cut the lease short
        (``dialect.elapsed_rounding``).
        Two requests on either API version: a GET (for the elapsed time) and the PATCH.
        """
        remaining = parse_lease(duration)
        session, ms_cv = await self._get_session(session_id)
        _raise_if_ended(session, "extend session", ms_cv)
        elapsed = (session.elapsed or timedelta(0)) + self.dialect.elapsed_rounding
        target = min(elapsed + remaining, MAX_LEASE)
        if session.max_lease is not None and session.max_lease >= target:
            return session
        return await self.extend_session(session.id, target)

    async def stop_session(self, session_id: str) -> bool:
        """Stop the session; idempotent. True when the service accepted the stop (the
        emulator, like the service, also answers 204 for a session already over); False
        when it answered that the session is unknown (404) or already over. Transient
        failures are retried."""
        sid = validate_session_id(session_id)
        method, parts = self.dialect.stop_request(sid)
        url = self._sessions_url(*parts)
        self._seen.pop(sid, None)
        response = await self._send("stop session", method, url)
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code == 404:
            return False
        await response.aread()
        error = self._error("stop session", response)
        if response.status_code in (400, 409, 422):
            # Some refusals mean "already over": check before calling it a failure.
            try:
                if (await self.get_session(sid)).status.is_terminal:
                    return False
            except SessionNotFoundError:
                return False
        raise error

    async def wait_until_ready(
        self,
        session_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float | None = None,
        on_status: StatusCallback | None = None,
    ) -> Session:
        """Poll until the session is Ready, and return it.

        Ends with :class:`SessionFailedError` (Error, with the service's message),
        :class:`SessionExpiredError`, :class:`SessionStoppedError` (Stopping/Stopped) or
        :class:`ReadyTimeoutError` after ``timeout`` seconds. Polls every ``poll_interval``
        seconds (the service asks for 5-10 s and answers faster polling with 429, whose
        ``Retry-After`` is honoured). ``on_status`` hears every status *change*.
        """
        sid = validate_session_id(session_id)
        timeout = self.settings.ready_timeout if timeout is None else timeout
        interval = self.settings.poll_interval if poll_interval is None else poll_interval
        if timeout <= 0 or interval <= 0:
            raise ValueError("timeout and poll_interval must be positive")
        start = self.clock.time()
        deadline = start + timeout
        last: SessionStatus | None = None
        while True:
            try:
                session, ms_cv = await self._get_session(sid)
            except RateLimitedError as exc:
                delay = exc.retry_after or interval
                if self.clock.time() + delay > deadline:
                    raise ReadyTimeoutError(
                        f"session {sid} was not Ready after {timeout:.0f}s: the service kept"
                        f" answering 429 ({exc})",
                        session_id=sid,
                    ) from exc
                await self.clock.sleep(delay)
                continue
            if session.status != last:
                if on_status is not None:
                    result = on_status(last, session)
                    if result is not None:
                        await result
                last = session.status
            if session.status == SessionStatus.READY:
                return session
            _raise_if_ended(session, "wait for Ready", ms_cv)
            now = self.clock.time()
            if now >= deadline:
                raise ReadyTimeoutError(
                    f"session {sid} was not Ready after {timeout:.0f}s (still {session.status};"
                    f" MS-CV: {ms_cv or 'none'})",
                    session_id=sid,
                    session=session,
                )
            await self.clock.sleep(min(interval, deadline - now))


class _DialectCalls:
    """The client as its dialect sees it (:class:`~arr_prefect.dialects.SessionCalls`):
    sending with the client's retries and reading its last-seen sessions, without making
    those internals part of ArrClient's public surface."""

    __slots__ = ("_arr",)

    def __init__(self, arr: ArrClient) -> None:
        self._arr = arr

    @property
    def clock(self) -> Clock:
        return self._arr.clock

    def sessions_url(self, *parts: str) -> str:
        return self._arr._sessions_url(*parts)

    async def send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        json: Any = None,
        idempotent: bool = True,
        on_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        arr = self._arr
        return await arr._send(
            operation,
            method,
            url,
            json=json,
            idempotent=idempotent,
            on_retry=on_retry,
        )

    async def call(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        expect: Iterable[int],
        json: Any = None,
        on_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        return await self._arr._call(
            operation, method, url, expect=expect, json=json, on_retry=on_retry
        )

    def error(self, operation: str, response: httpx.Response) -> ArrHTTPError:
        return self._arr._error(operation, response)

    def session_in(self, operation: str, response: httpx.Response) -> Session:
        return self._arr._session_in(operation, response)

    def remember(self, session: Session) -> Session:
        return self._arr._remember(session)

    def last_seen(self, session_id: str) -> tuple[Session, float] | None:
        return self._arr._seen.get(session_id)

    def backoff(self, attempt: int) -> float:
        return self._arr._backoff(attempt)

    def random_below(self, limit: int) -> int:
        return self._arr._rng.randrange(1, limit)

    async def get_session(self, session_id: str) -> Session:
        return await self._arr.get_session(session_id)

    async def list_sessions(self) -> list[Session]:
        return await self._arr.list_sessions()

    async def stop_session(self, session_id: str) -> bool:
        return await self._arr.stop_session(session_id)


def _raise_if_ended(session: Session, doing: str, ms_cv: str | None = None) -> None:
    """Raise the specific :class:`SessionEndedError` for a session that is over.

    The message ends with the MS-CV of the answer that showed the status: support needs it.
    """
    detail = f": {session.message}" if session.message else ""
    detail += f" (MS-CV: {ms_cv or 'none'})"
    status = session.status
    if status == SessionStatus.ERROR:
        raise SessionFailedError(
            f"{doing}: session {session.id} ended in Error{detail}",
            session_id=session.id,
            session=session,
        )
    if status == SessionStatus.EXPIRED:
        raise SessionExpiredError(
            f"{doing}: session {session.id} expired (its lease ran out){detail}",
            session_id=session.id,
            session=session,
        )
    if status in (SessionStatus.STOPPED, SessionStatus.STOPPING):
        raise SessionStoppedError(
            f"{doing}: session {session.id} was stopped ({status}){detail}",
            session_id=session.id,
            session=session,
        )


# ---------------------------------------------------------------------- factories


class ClientFactory(Protocol):
    """Builds a client: from ``settings`` when given, else from the ambient ``ARR_*`` ones.

    :class:`ArrClient` itself is one.
    """

    def __call__(self, settings: ArrSettings | None = None, /) -> ArrClient: ...


_factory: ClientFactory | None = None


def client_factory() -> ClientFactory:
    """What :func:`open_client` builds clients with: the override, or :class:`ArrClient`."""
    return _factory if _factory is not None else ArrClient


@contextlib.contextmanager
def use_client_factory(factory: ClientFactory | None) -> Iterator[None]:
    """Make :func:`open_client` (and so every task and flow) build clients with ``factory``.

    This is how tests and the demo point the tasks at an in-process emulator
    (``lambda settings=None: ArrClient(settings or mine, transport=emulator.transport())``)
    without patching httpx, which would also catch Prefect's own API traffic. The factory
    gets the settings a caller chose (from a credentials block), or None for the ambient.

    Args:
        factory: Builds a client from the chosen settings (or None: the ambient ones);
            None restores the default factory.

    Yields:
        Nothing: the factory is in use until the ``with`` block ends.
    """
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous


@contextlib.asynccontextmanager
async def open_client(
    client: ArrClient | None = None, *, settings: ArrSettings | None = None
) -> AsyncIterator[ArrClient]:
    """Use ``client`` if given, else build one from ``settings`` (default: the ambient
    ``ARR_*`` settings) and close it afterwards.

    Args:
        client: A client to use as it is (left open).
        settings: The settings to build a client from.

    Yields:
        The client.

    Raises:
        ConfigurationError: No client given and no account configured.
    """
    if client is not None:
        yield client
        return
    async with client_factory()(settings) as built:
        yield built
