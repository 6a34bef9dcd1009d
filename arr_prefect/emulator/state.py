"""The emulator's pure state machine: sessions, leases, tokens, billing. No I/O, no asyncio.

Time comes only from the injected :class:`~arr_prefect.clock.Clock`; every operation
first *settles* all sessions up to ``clock.time()``, so state changes that happened while
nobody was looking (start-up finishing, a lease running out) are applied with the exact
instant they happened, not the instant they were noticed.

Settling costs what is due, not what exists: each active session has one timer (the
instant of its next transition: Ready, Error or Expired) in a heap, and a settle pops only
the timers that are due. Ended sessions are never looked at again, so answering a request
costs the same with 10,000 sessions in the ledger as with one.

Service behaviour reproduced here (ARR_API.md §3-§5):

- A session is ``Starting`` from create until ``startup_seconds`` later, then ``Ready``.
- The lease counts from Ready: a session is ``Expired`` once it has been Ready for
  ``max_lease`` (``ended_at = ready_at + max_lease``). A Starting session never expires.
- The lease sent on extend is the *total* since Ready, never an increment. v1 accepts any
  ``0 < lease <= 24 h`` (shorter than the time already spent Ready ends the session at
  ``ready_at + lease``); 2021-01-01 demands more minutes than the current lease (422).
- Stop is immediate (the emulator never reports v1's transient ``Stopping``) and
  idempotent: stopping an ended session succeeds and changes nothing.
- Ended sessions leave the active list but stay readable with their terminal status.
- Creation can fail for lack of capacity: the create itself succeeds, and the session
  goes to ``Error`` with a message at the next settle.
- Billing: the VM is allocated at create, so a session bills from ``created_at`` until
  ``ended_at`` (or now). A session refused for capacity bills nothing.
- Account quota (``max_sessions``): an account may hold at most that many Starting or
  Ready sessions, of any size. A create beyond it is refused outright (no session, no
  bill): **403** ``QuotaExceeded``. The service's answer to a quota overrun is documented
  nowhere we could find (the 2021-01-01 spec lists 400/401/403/409/429/500 for create and
  gives none of them that meaning; the docs describe only the regional capacity shortage
  above, which is a different thing), so this is the emulator's choice: 403 is in the
  documented set, it is not retried by a client's transient-failure retries (429 and 5xx
  are, which would hide the overrun and hammer the service; ArrClient waits for the quota
  on its own, bounded by ``ARR_QUOTA_WAIT``, and says so in its log), and the ``code`` and
  ``message`` say what happened and what to do. A 2021-01-01 PUT retry of an existing
  session is not a new session: it is answered as usual at the quota.

This module is not thread-safe: :class:`~arr_prefect.emulator.Emulator` serialises
every call with a lock.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import math
import random
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from arr_prefect.clock import Clock
from arr_prefect.models import (
    MAX_LEASE,
    ApiVersion,
    SessionSize,
    SessionStatus,
    lease_minutes,
)

__all__ = [
    "MAX_LEASE_MINUTES",
    "ApiError",
    "EmulatorState",
    "EndReason",
    "LeaseChange",
    "RequestLog",
    "SessionRecord",
    "isoformat",
]

EndReason = Literal["stopped", "expired", "error"]

MAX_LEASE_MINUTES = 1440
"""The 2021-01-01 API's largest ``maxLeaseTimeMinutes`` (24 hours)."""

TERAFLOPS = {SessionSize.STANDARD: 8.1, SessionSize.PREMIUM: 16.2}
"""Reported once Ready (2021-01-01 ``teraflops``; the recorded exchange shows 8.1)."""

PORT_RANGE = (49152, 65534)
"""``handshakePort`` and ``arrInspectorPort`` are drawn from this range (inclusive)."""

LEASE_EXPIRED_MESSAGE = "The session's lease expired."
TOKEN_ISSUER = "arr-emulator"  # noqa: S105 - the JWT "iss" claim, not a secret


def isoformat(timestamp: float | None) -> str | None:
    """ISO-8601 UTC with a ``Z``, millisecond precision, as the service writes times."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApiError(Exception):
    """A refusal the service would answer with an HTTP error status.

    The app turns it into ``{"error": {"code": ..., "message": ...}}`` with ``status``
    and any extra ``headers`` (``WWW-Authenticate`` on 401, ``Retry-After`` on 429).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _unauthorized(message: str) -> ApiError:
    # RFC 6750: a 401 for a bearer token names the problem in WWW-Authenticate.
    return ApiError(
        401, "Unauthorized", message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


@dataclass(frozen=True)
class LeaseChange:
    """One successful extend: when, through which API, and the new total lease."""

    at: float
    api_version: ApiVersion
    max_lease: timedelta


@dataclass
class SessionRecord:
    """Everything the emulator knows about one session, ended or not."""

    id: str
    account_id: str
    """Lower-cased: account ids compare case-insensitively."""
    api_version: ApiVersion
    """The API the session was created through."""
    size: SessionSize
    max_lease: timedelta
    created_at: float
    ready_due: float
    """When start-up completes (``created_at + startup_seconds``)."""
    hostname: str
    handshake_port: int
    arr_inspector_port: int
    initial_lease: timedelta
    """The lease asked for at create: what a 2021-01-01 PUT retry is compared with."""
    models: tuple[str, ...] = ()
    status: SessionStatus = SessionStatus.STARTING
    ready_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    message: str | None = None
    error_code: str | None = None
    extend_history: list[LeaseChange] = field(default_factory=list)
    stop_requests: int = 0
    fail_at_startup: tuple[str, str] | None = None
    """(code, message): the session will end in Error when start-up completes."""
    fail_now: tuple[str, str] | None = None
    """(code, message): the session goes to Error at the next settle (no capacity)."""
    timer_due: float | None = field(default=None, repr=False, compare=False)
    """When the state's heap next settles this session (its newest timer there)."""

    def next_transition(self) -> float | None:
        """The instant of this session's next transition by time alone (None once ended)."""
        if self.status is SessionStatus.STARTING:
            return self.created_at if self.fail_now is not None else self.ready_due
        if self.status is SessionStatus.READY:
            assert self.ready_at is not None
            return self.ready_at + self.max_lease.total_seconds()
        return None

    @property
    def is_active(self) -> bool:
        """Starting or Ready: holds, and bills for, a VM."""
        return self.status.is_active

    @property
    def teraflops(self) -> float:
        return TERAFLOPS[self.size]

    def elapsed(self, now: float) -> timedelta:
        """Time spent Ready (zero while Starting; frozen once ended)."""
        if self.ready_at is None:
            return timedelta(0)
        end = self.ended_at if self.ended_at is not None else now
        return timedelta(seconds=max(0.0, end - self.ready_at))

    def billed_seconds(self, now: float) -> float:
        """Seconds billed: from create (the VM is allocated then) until ended or now.

        A session refused for capacity ends at its ``created_at``, so it bills nothing.
        """
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.created_at)

    def _end(self, status: SessionStatus, at: float, reason: EndReason) -> None:
        self.status = status
        self.ended_at = at
        self.end_reason = reason

    def settle(self, now: float) -> None:
        """Apply every transition due up to ``now``, each at the instant it was due."""
        if self.status is SessionStatus.STARTING:
            if self.fail_now is not None:
                self.error_code, self.message = self.fail_now
                self._end(SessionStatus.ERROR, self.created_at, "error")
                return
            if now < self.ready_due:
                return
            if self.fail_at_startup is not None:
                self.error_code, self.message = self.fail_at_startup
                self._end(SessionStatus.ERROR, self.ready_due, "error")
                return
            self.status = SessionStatus.READY
            self.ready_at = self.ready_due
        if self.status is SessionStatus.READY:
            assert self.ready_at is not None
            expires_at = self.ready_at + self.max_lease.total_seconds()
            if now >= expires_at:
                self.error_code, self.message = "LeaseExpired", LEASE_EXPIRED_MESSAGE
                self._end(SessionStatus.EXPIRED, expires_at, "expired")

    def ledger_entry(self, now: float) -> dict[str, Any]:
        """The accounting view of this session (JSON-ready)."""
        return {
            "id": self.id,
            "account_id": self.account_id,
            "api_version": self.api_version,
            "size": self.size.value,
            "status": self.status.value,
            "created_at": isoformat(self.created_at),
            "ready_at": isoformat(self.ready_at),
            "ended_at": isoformat(self.ended_at),
            "end_reason": self.end_reason,
            "billed_seconds": self.billed_seconds(now),
            "max_lease_seconds": self.max_lease.total_seconds(),
            "elapsed_seconds": self.elapsed(now).total_seconds(),
            "extend_count": len(self.extend_history),
            "extend_history": [
                {
                    "at": isoformat(change.at),
                    "api_version": change.api_version,
                    "max_lease_seconds": change.max_lease.total_seconds(),
                }
                for change in self.extend_history
            ],
            "stop_requests": self.stop_requests,
            "message": self.message,
            "error_code": self.error_code,
            "hostname": self.hostname,
            "models": list(self.models),
        }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RequestLog:
    """Counts of requests per route name and answered status (``"dropped"`` for drops)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, route: str, status: int | str) -> None:
        self._counts[(route, str(status))] += 1

    def counts(self) -> dict[str, dict[str, int]]:
        """``{route: {status: count}}``, routes and statuses sorted."""
        result: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self._counts.items()):
            result.setdefault(route, {})[status] = count
        return result

    def count(self, route: str, status: int | str | None = None) -> int:
        """Requests to ``route`` (answered with ``status`` when given)."""
        return sum(
            n
            for (r, s), n in self._counts.items()
            if r == route and (status is None or s == str(status))
        )

    def clear(self) -> None:
        self._counts.clear()


class EmulatorState:
    """Sessions and tokens of every account, driven by ``clock``."""

    def __init__(
        self,
        *,
        clock: Clock,
        accounts: Mapping[str, str],
        startup_seconds: float = 30.0,
        region: str = "westus2",
        capacity: Mapping[str, int] | None = None,
        token_lifetime: float = 86400.0,
        seed: int | None = None,
        max_sessions: int | None = None,
    ) -> None:
        if startup_seconds < 0:
            raise ValueError(f"startup_seconds must not be negative, got {startup_seconds!r}")
        if token_lifetime <= 0:
            raise ValueError(f"token_lifetime must be positive, got {token_lifetime!r}")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions!r}")
        self.clock = clock
        self.accounts = {account.lower(): key for account, key in accounts.items()}
        self.startup_seconds = float(startup_seconds)
        self.region = region
        self.capacity: dict[SessionSize, int] = {
            SessionSize.parse(size): int(limit) for size, limit in (capacity or {}).items()
        }
        self.token_lifetime = float(token_lifetime)
        self.max_sessions = max_sessions
        """The account quota: most Starting or Ready sessions per account (None: no quota)."""
        self.quota_refusals = 0
        """Creates refused for the account quota (403 ``QuotaExceeded``)."""
        self._rng = random.Random(seed)
        self._secret = secrets.token_bytes(32)
        self._sessions: dict[tuple[str, str], SessionRecord] = {}
        # Active sessions only, per account in creation order, and the count of those
        # holding a VM of each size: what list and the capacity check need, without
        # walking the sessions that have ended.
        self._active: dict[str, dict[str, SessionRecord]] = {}
        self._in_use: Counter[SessionSize] = Counter()
        # (due, tie-breaker, record): each active session's next transition.
        self._timers: list[tuple[float, int, SessionRecord]] = []
        self._timer_seq = itertools.count()
        self._live_tokens: set[str] = set()
        self._issued: dict[str, dict[str, Any]] = {}
        self.tokens_issued = 0
        self.revision = 0
        """Counts the changes to what a session list shows: a session created, settled,
        extended or ended. Equal revisions mean equal lists, up to elapsed times."""

    # --- time ---------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.time()

    def settle(self) -> float:
        """Bring every session up to the clock's now; return that now.

        Pops only the timers that are due: O(log n) per transition, nothing per session
        that has nothing due (a stale timer, left by an extend, is dropped when popped).
        """
        now = self.now()
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, record = heapq.heappop(timers)
            if record.timer_due == due:
                record.timer_due = None
                self._resettle(record, now)
        return now

    def _resettle(self, record: SessionRecord, now: float) -> None:
        """Settle one session after a change, then index it by what it has become."""
        self.revision += 1
        if record.is_active:
            record.settle(now)
        if not record.is_active:
            self._retire(record)
            return
        self._schedule(record)

    def _schedule(self, record: SessionRecord) -> None:
        """Put the session's next transition in the heap (unless that timer is there)."""
        due = record.next_transition()
        if due is not None and due != record.timer_due:
            record.timer_due = due
            heapq.heappush(self._timers, (due, next(self._timer_seq), record))

    def _admit(self, record: SessionRecord) -> None:
        """Add a new session to the ledger and, while it is active, to the indexes."""
        self.revision += 1
        self._sessions[(record.account_id, record.id)] = record
        self._active.setdefault(record.account_id, {})[record.id] = record
        if record.fail_now is None:
            self._in_use[record.size] += 1
        # Not settled yet: the create's own answer shows Starting, even for a session
        # refused for capacity or one with no start-up time; the next settle moves it on.
        self._schedule(record)

    def _retire(self, record: SessionRecord) -> None:
        """Drop an ended session from the indexes of active ones (once)."""
        active = self._active.get(record.account_id)
        if active is None or active.pop(record.id, None) is None:
            return
        self.revision += 1
        if record.fail_now is None:
            self._in_use[record.size] -= 1
        record.timer_due = None

    # --- tokens (STS) -------------------------------------------------------------------

    def issue_token(self, account_id: str, authorization: str | None) -> str:
        """Answer the STS: ``Authorization: Bearer {accountId}:{accountKey}`` -> a JWT.

        Missing header, unknown account, a key that does not match, or credentials of
        another account than the path's -> 401.
        """
        credential = _bearer(authorization)
        if credential is None or ":" not in credential:
            raise _unauthorized(
                "Missing or malformed Authorization header: expected"
                " 'Bearer {accountId}:{accountKey}'."
            )
        cred_account, _, key = credential.partition(":")
        account = account_id.lower()
        expected = self.accounts.get(account)
        if (
            expected is None
            or cred_account.lower() != account
            or not hmac.compare_digest(key.encode(), expected.encode())
        ):
            raise _unauthorized("The account id or account key is not valid.")
        issued_at = int(self.now())
        jti = uuid.UUID(int=self._rng.getrandbits(128), version=4).hex
        claims = {
            "iss": TOKEN_ISSUER,
            "aud": account,
            "accountId": account,
            "iat": issued_at,
            "exp": issued_at + math.ceil(self.token_lifetime),
            "jti": jti,
        }
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256)
        self._live_tokens.add(jti)
        self.tokens_issued += 1
        token = f"{header}.{payload}.{_b64url(signature.digest())}"
        self._issued[token] = claims
        return token

    def authenticate(self, authorization: str | None, account_id: str) -> dict[str, Any]:
        """Check a session call's bearer token for ``account_id``; return its claims.

        Malformed, badly signed, expired or revoked -> 401 (``invalid_token``); a valid
        token of another account -> 403.
        """
        token = _bearer(authorization)
        if token is None:
            raise _unauthorized("Missing Authorization header: expected 'Bearer <AccessToken>'.")
        # A token this emulator issued, byte for byte, needs no signature check or parse
        # (most of the cost of a GET); its expiry, revocation and account are checked below.
        claims = self._issued.get(token)
        if claims is None:
            claims = self._verify(token)
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or self.now() >= exp:
            raise _unauthorized("The access token has expired.")
        if claims.get("jti") not in self._live_tokens:
            raise _unauthorized("The access token has been revoked.")
        if str(claims.get("accountId", "")).lower() != account_id.lower():
            raise ApiError(403, "Forbidden", "The access token was not issued for this account.")
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        """The claims of a well-formed token signed with this emulator's secret (else 401)."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _unauthorized("The access token is malformed.")
        header_b64, payload_b64, signature_b64 = parts
        expected = hmac.new(
            self._secret, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
        ).digest()
        try:
            signature = _b64url_decode(signature_b64)
        except ValueError:
            raise _unauthorized("The access token is malformed.") from None
        # The signature first: nothing a stranger wrote is parsed (a forged token nesting
        # a thousand levels deep is just a bad signature).
        if not hmac.compare_digest(signature, expected):
            raise _unauthorized("The access token's signature is not valid.")
        try:
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(payload_b64))
        except (ValueError, RecursionError):
            raise _unauthorized("The access token is malformed.") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise _unauthorized("The access token is malformed.")
        if not isinstance(claims, dict):
            raise _unauthorized("The access token is malformed.")
        return claims

    def expire_tokens(self) -> int:
        """Revoke every token issued so far (a token expiring mid-run); return how many."""
        revoked = len(self._live_tokens)
        self._live_tokens.clear()
        self._issued.clear()
        return revoked

    # --- sessions -----------------------------------------------------------------------

    def _new_record(
        self,
        account_id: str,
        session_id: str,
        api_version: ApiVersion,
        size: SessionSize,
        max_lease: timedelta,
        models: Iterable[str],
        now: float,
    ) -> SessionRecord:
        low, high = PORT_RANGE
        handshake = self._rng.randint(low, high)
        inspector = self._rng.randint(low, high)
        while inspector == handshake:
            inspector = self._rng.randint(low, high)
        host_id = uuid.UUID(int=self._rng.getrandbits(128), version=4)
        return SessionRecord(
            id=session_id,
            account_id=account_id.lower(),
            api_version=api_version,
            size=size,
            max_lease=max_lease,
            initial_lease=max_lease,
            created_at=now,
            ready_due=now + self.startup_seconds,
            hostname=f"{host_id}.remoterenderingvm.{self.region}.mixedreality.azure.com",
            handshake_port=handshake,
            arr_inspector_port=inspector,
            models=tuple(models),
        )

    def _doom(self, record: SessionRecord, *, no_capacity: bool, fail_reason: str | None) -> None:
        """Apply capacity limits and injected failures to a session being created."""
        limit = self.capacity.get(record.size)
        if no_capacity or (limit is not None and self._in_use[record.size] >= limit):
            record.fail_now = (
                "InsufficientCapacity",
                f"No capacity available for size {record.size.value} in region {self.region}.",
            )
        elif fail_reason is not None:
            record.fail_at_startup = (
                "SessionStartFailed",
                f"The session failed to start: {fail_reason}",
            )

    def check_quota(self, account_id: str) -> None:
        """Refuse a new session of an account already at its quota: 403 ``QuotaExceeded``.

        Counts the account's Starting and Ready sessions of every size (a session refused
        for capacity never ran, so it does not count).
        """
        if self.max_sessions is None:
            return
        self.settle()
        account = account_id.lower()
        active = sum(1 for r in self._active.get(account, {}).values() if r.fail_now is None)
        if active >= self.max_sessions:
            self.quota_refusals += 1
            raise ApiError(
                403,
                "QuotaExceeded",
                f"The account has reached its quota of {self.max_sessions} active sessions"
                f" ({active} Starting or Ready). Stop a session, or wait for one to end,"
                " before creating another.",
            )

    def create_v1(
        self,
        account_id: str,
        *,
        size: SessionSize,
        max_lease: timedelta,
        models: Iterable[str] = (),
        no_capacity: bool = False,
        fail_reason: str | None = None,
    ) -> SessionRecord:
        """v1 create: the service picks a GUID; **not idempotent** (every call is a session).

        ``no_capacity`` / ``fail_reason`` inject the failures of ARR_API.md §5: the
        create succeeds and the session ends in Error (at once, or when start-up ends).
        """
        _check_v1_lease(max_lease)
        self.check_quota(account_id)
        now = self.settle()
        session_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        record = self._new_record(account_id, session_id, "v1", size, max_lease, models, now)
        self._doom(record, no_capacity=no_capacity, fail_reason=fail_reason)
        self._admit(record)
        return record

    def create_v2021(
        self,
        account_id: str,
        session_id: str,
        *,
        size: SessionSize,
        max_lease_minutes: int,
        no_capacity: bool = False,
        fail_reason: str | None = None,
    ) -> tuple[SessionRecord, bool]:
        """2021-01-01 PUT: create ``session_id``; return ``(record, created)``.

        PUT is idempotent: the same ID with the same size and lease as at its creation
        returns the existing session (``created`` False, the app answers 200). Other
        settings, or a session with that ID that has already ended, -> 409 Conflict (an
        ended session's ID cannot be reused while the service remembers it).
        """
        _check_v2021_minutes(max_lease_minutes)
        now = self.settle()
        existing = self._sessions.get((account_id.lower(), session_id))
        if existing is not None:
            same = existing.size is size and existing.initial_lease == timedelta(
                minutes=max_lease_minutes
            )
            if not same:
                raise ApiError(
                    409,
                    "Conflict",
                    f"A session with id '{session_id}' already exists with different settings.",
                )
            if not existing.is_active:
                raise ApiError(
                    409,
                    "Conflict",
                    f"A session with id '{session_id}' already exists and has ended"
                    f" ({existing.status.value}).",
                )
            return existing, False
        self.check_quota(account_id)
        record = self._new_record(
            account_id,
            session_id,
            "2021-01-01",
            size,
            timedelta(minutes=max_lease_minutes),
            (),
            now,
        )
        self._doom(record, no_capacity=no_capacity, fail_reason=fail_reason)
        self._admit(record)
        return record, True

    def exists(self, account_id: str, session_id: str) -> bool:
        return (account_id.lower(), session_id) in self._sessions

    def get(self, account_id: str, session_id: str) -> SessionRecord:
        """One session of the account, ended or not; unknown -> 404 NotFound."""
        self.settle()
        record = self._sessions.get((account_id.lower(), session_id))
        if record is None:
            raise ApiError(404, "NotFound", f"The session '{session_id}' was not found.")
        return record

    def list_active(self, account_id: str) -> list[SessionRecord]:
        """The account's Starting and Ready sessions, oldest first (ended ones leave)."""
        self.settle()
        active = self._active.get(account_id.lower(), {})
        return sorted(active.values(), key=lambda r: (r.created_at, r.id))

    def extend_v1(self, account_id: str, session_id: str, max_lease: timedelta) -> SessionRecord:
        """v1 PATCH: set the *total* lease. Any ``0 < lease <= 24 h`` is accepted.

        A lease not above the time already spent Ready ends the session as Expired at
        ``ready_at + lease``. An ended session -> 400 BadRequest (v1 documents no codes).
        """
        _check_v1_lease(max_lease)
        record = self.get(account_id, session_id)
        if not record.is_active:
            raise ApiError(
                400,
                "BadRequest",
                f"The session '{session_id}' is {record.status.value}: only a Starting or"
                " Ready session can be extended.",
            )
        now = self.now()
        record.max_lease = max_lease
        record.extend_history.append(LeaseChange(now, "v1", max_lease))
        self._resettle(record, now)
        return record

    def extend_v2021(
        self, account_id: str, session_id: str, max_lease_minutes: int
    ) -> SessionRecord:
        """2021-01-01 PATCH: the new ``maxLeaseTimeMinutes`` must exceed the current one.

        Not greater, or an ended session -> 422 ``UnprocessableEntity`` (the one code the
        spec's example gives a 422; PATCH documents 422, not 409, for refusals); over
        1440 or negative -> 400 BadRequest.
        """
        _check_v2021_minutes(max_lease_minutes)
        record = self.get(account_id, session_id)
        if not record.is_active:
            raise ApiError(
                422,
                "UnprocessableEntity",
                f"The session '{session_id}' is {record.status.value}: only a Starting or"
                " Ready session can be extended.",
            )
        current = lease_minutes(record.max_lease)
        if max_lease_minutes <= current:
            raise ApiError(
                422,
                "UnprocessableEntity",
                f"The new maxLeaseTimeMinutes ({max_lease_minutes}) must be greater than"
                f" the current value ({current}).",
            )
        now = self.now()
        record.max_lease = timedelta(minutes=max_lease_minutes)
        record.extend_history.append(LeaseChange(now, "2021-01-01", record.max_lease))
        self._resettle(record, now)
        return record

    def stop(self, account_id: str, session_id: str) -> SessionRecord:
        """Stop now. Idempotent: an ended session stays as it is; unknown -> 404."""
        record = self.get(account_id, session_id)
        record.stop_requests += 1
        if record.is_active:
            record.message = None
            record.error_code = None
            record._end(SessionStatus.STOPPED, self.now(), "stopped")
            self._retire(record)
        return record

    # --- accounting ---------------------------------------------------------------------

    def sessions(self) -> list[SessionRecord]:
        """Every session ever created, oldest first."""
        self.settle()
        return sorted(self._sessions.values(), key=lambda r: (r.created_at, r.id))

    def running(self) -> list[SessionRecord]:
        """Sessions still Starting or Ready, across accounts, oldest first (the leak detector)."""
        self.settle()
        return sorted(
            (r for active in self._active.values() for r in active.values()),
            key=lambda r: (r.created_at, r.id),
        )

    def running_count(self) -> int:
        """How many sessions are Starting or Ready, across accounts."""
        self.settle()
        return sum(len(active) for active in self._active.values())

    def ledger(self) -> dict[str, Any]:
        """Every session ever created with its billing, and how many are still running."""
        records = self.sessions()
        now = self.now()
        return {
            "time": isoformat(now),
            "sessions": [r.ledger_entry(now) for r in records],
            "max_sessions": self.max_sessions,
            "quota_refusals": self.quota_refusals,
            "running": sum(1 for r in records if r.is_active),
        }


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _check_v1_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise ApiError(400, "BadRequest", "The maxLeaseTime must be longer than zero.")
    if lease > MAX_LEASE:
        raise ApiError(400, "BadRequest", "The maxLeaseTime cannot be longer than 24 hours.")


def _check_v2021_minutes(minutes: int) -> None:
    if minutes < 0:
        raise ApiError(400, "BadRequest", "The maxLeaseTimeMinutes value cannot be negative.")
    if minutes > MAX_LEASE_MINUTES:
        raise ApiError(
            400,
            "BadRequest",
            f"The maxLeaseTimeMinutes value cannot be greater than {MAX_LEASE_MINUTES}.",
        )
