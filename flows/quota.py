# Why the lease endpoints by hand, and not Prefect's public
# `prefect.concurrency.asyncio.concurrency(names, lease_duration=, holder=, strict=)`
# (read in 3.6.22 and 3.9.1). It gives the same two guarantees:
# the server never grants more slots than the limit, and a SIGKILLed holder's slot is back
# within lease + repossessor loop (60 + 15 = 75 s), since it renews at 3/4 of the lease.
# What it lacks, for a run of many sessions:
# - a limit that does not exist is asked about by every holder, each logging a WARNING
#   (its no-limit cache is only for task-run "tag:" limits): 200 holders of a run, with no
#   limit, sent 200 requests and logged 200 warnings; here, 1 request and 1 info line;
# - in 3.9.1, a renewal thread with its own HTTP client per held slot: 205 threads for 200
#   holders; here, one asyncio task each on the flow's client;
# - renewal gives up after 3 attempts (about 3 s of backoff) and never renews again: a
#   server away for longer loses the slot while the session runs; here, renewal every 1/4
#   of the lease, retried until the lease would lapse;
# - no sign of a wait (its Retry-After loop is inside): no log when it starts, every 30 s
#   and at its end, no `session-slot-wait` artifact or `arr.session.quota-wait` event, no
#   waited time for the summary; and `timeout_seconds` is real time, not the caller's clock;
# - acquisitions of one limit queue one at a time through a per-process service, and give
#   backs are not bounded: 200 holders of a limit of 200 took 43.2 s to get their slots,
#   7 requests answered 5xx (retried); this module's four-at-a-time gate keeps the
#   200-session bench row's slot traffic at a few ms a request (README, Performance).
# Figures: /tmp script, `prefect_test_harness`, Prefect 3.9.1, 200 `concurrency()` holders
# in one event loop on a loaded 2-core machine (load average 6-7), 2026-12-03.
"""The account's session quota, the Prefect way: a slot of a global concurrency limit.

An ARR account caps how many sessions it may run at once. A fleet of workers on many hosts
shares that cap through one Prefect **global concurrency limit** named for the account
(``arr-sessions-<account id>`` by default, ``ARR_SESSION_LIMIT`` to rename it): before
``rendering_session`` creates a session it takes one slot, and it gives the slot back once
the session is stopped. Create the limit once per account::

    prefect global-concurrency-limit create arr-sessions-<account id> --limit 3

No such limit, no quota: the session is created at once (one log line says so). The
answer holds for the rest of the flow run: its other sessions do not ask again, and
sessions starting together ask once between them (the first one's question), so a run of
200 sessions without a limit costs the Prefect server one request, not 400. The process
remembers it for :data:`NO_LIMIT_REMEMBERED_SECONDS` (30 s) too: a run starting meanwhile
in the same process (runs called in-process, one after the other) asks nothing, so a limit
created just now binds this process's new runs within 30 s.

Slots are **leased** (Prefect 3's ``/v2/concurrency_limits/increment-with-lease``): the
server grants the slot for ``ARR_SESSION_SLOT_LEASE_SECONDS`` (60 s by default, the least
the server accepts), and :class:`SessionSlot` renews it every quarter of that while the
session lives, retrying failed renewals until the lease would run out. If the process
holding it dies (SIGKILL, a lost host), nobody renews it; the server's *repossessor*
service, which looks for expired leases every ``PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS``
(15 s by default), then gives the slot back. So a killed holder's slot returns at most
``lease + repossessor loop`` after its last renewal: **75 s** with the defaults
(:func:`slot_return_bound`).

Waiting for a slot (every slot in use) is logged when it starts, every 30 s while it lasts
and when it ends, and shown in the flow run as the ``session-slot-wait`` artifact; the
render-batch summary reports it too. It does not count against the ready timeout unless
asked (``ready_timeout_includes_slot_wait``). The server tells how long to wait between
attempts (423 with ``Retry-After``, at most
``PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS``, 30 s by default),
and that is honoured.

The server keeps leases apart from the limit's counter, in
``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE``: in memory by default, so a server restart
forgets every lease while the counter keeps their slots taken, and those slots never come
back by themselves. A fleet's server should keep leases on disk
(``prefect.server.concurrency.lease_storage.filesystem``, under ``PREFECT_HOME``); see the
README's "Running a fleet".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import anyio
import httpx
from prefect import get_client
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectNotFound

from arr_prefect.flows.events import emit_quota_wait
from arr_prefect.tasks.sessions import run_logger
from arr_prefect.units import format_duration

__all__ = [
    "DEFAULT_SESSION_LIMIT",
    "NO_LIMIT_REMEMBERED_SECONDS",
    "SLOT_WAIT_ARTIFACT_KEY",
    "SessionSlot",
    "SlotWait",
    "SlotWaitTimeoutError",
    "session_limit_name",
    "slot_return_bound",
]

DEFAULT_SESSION_LIMIT = "arr-sessions-{account_id}"
"""The limit's name unless ``ARR_SESSION_LIMIT`` says otherwise (``{account_id}`` filled in)."""

SLOT_WAIT_ARTIFACT_KEY = "session-slot-wait"
"""The flow-run artifact that shows a wait for a slot."""

REPOSSESSOR_LOOP_SECONDS = 15.0
"""Prefect's default ``PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS``."""

PROGRESS_EVERY_SECONDS = 30.0
"""A wait for a slot logs a progress line this often (real seconds)."""

# Calls to the Prefect API that fail for transient reasons (the server restarting, its
# database away) are retried this often while waiting, renewing or releasing.
_RETRY_SECONDS = 2.0
_RELEASE_TIMEOUT_SECONDS = 30.0


SLOT_CALLS_AT_ONCE = 4
"""Most slot requests (take, renew, give back) one event loop has in flight at once. A
slot request is a write on the server's database; 200 sessions of a run starting or
ending together sent 200 at once, which a Prefect server on SQLite answered with 503s for
minutes (Prefect's client retrying each with backoff). Queued here they take a few
milliseconds each, and no fleet needs more at once."""
_SLOT_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slot_gate() -> asyncio.Semaphore:
    """This event loop's gate in front of the slot requests."""
    loop = asyncio.get_running_loop()
    gate = _SLOT_GATES.get(loop)
    if gate is None:
        gate = _SLOT_GATES[loop] = asyncio.Semaphore(SLOT_CALLS_AT_ONCE)
    return gate


_LimitKey = tuple[str, str, str]
"""(Prefect API URL, flow run ID, limit name)."""

_LIMIT_EXISTS: OrderedDict[_LimitKey, bool] = OrderedDict()
"""What each flow run learnt of its limit (most recent last): False, the run's quota is off;
True, its sessions ask for slots side by side."""
_KNOWN_MAX = 4096
_ASKING: dict[tuple[asyncio.AbstractEventLoop, _LimitKey], asyncio.Future[None]] = {}
"""A first question in flight, per event loop: sessions starting with it await its answer."""


NO_LIMIT_REMEMBERED_SECONDS = 30.0
"""How long this process remembers that a limit does not exist, for its *other* flow runs
(a run's own answer holds for the whole run). A run that starts meanwhile takes no slot and
asks the server nothing: with no limit, the question (a write of an empty lease and its
give-back) was two of the four Prefect API requests ``render_batch`` adds to a flow run.
The cost: a limit created just now is enforced on this process's runs at most this long
later (runs already going never take a slot, as before)."""

_NO_LIMIT_SEEN: dict[tuple[str, str], float] = {}
"""(Prefect API URL, limit name) -> when this process last learnt that it does not exist
(:func:`_now`)."""
_now: Callable[[], float] = time.monotonic
"""The clock of that memory (tests move it)."""


def _learnt(key: _LimitKey, exists: bool) -> None:
    _LIMIT_EXISTS[key] = exists
    while len(_LIMIT_EXISTS) > _KNOWN_MAX:
        _LIMIT_EXISTS.popitem(last=False)
    if not exists:
        api_url, _, name = key
        _NO_LIMIT_SEEN[(api_url, name)] = _now()


def _no_limit_seen_ago(key: _LimitKey) -> float | None:
    """Seconds since this process learnt that the limit does not exist, if it still
    remembers (None: it does not, or never learnt it)."""
    api_url, _, name = key
    seen = _NO_LIMIT_SEEN.get((api_url, name))
    if seen is None:
        return None
    ago = _now() - seen
    if not 0 <= ago < NO_LIMIT_REMEMBERED_SECONDS:
        return None
    return ago


def _no_limit_seen_before(key: _LimitKey) -> bool:
    """Whether this process ever learnt that the limit does not exist (its memory of that
    may have lapsed): then the limit is likely still missing, and asking with a read is
    cheaper than asking for a slot."""
    api_url, _, name = key
    return (api_url, name) in _NO_LIMIT_SEEN


def session_limit_name(template: str, account_id: str | None) -> str:
    """The limit's name: ``template`` with ``{account_id}`` replaced."""
    return template.replace("{account_id}", account_id or "default")


def slot_return_bound(
    lease_seconds: float, repossessor_loop_seconds: float = REPOSSESSOR_LOOP_SECONDS
) -> float:
    """Most seconds after its holder is killed before a slot is free again: the lease
    (counted from the last renewal) plus one pass of the server's repossessor."""
    return lease_seconds + repossessor_loop_seconds


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``: a wait as an operator reads it (the project's one format)."""
    return format_duration(seconds)


class SlotWaitTimeoutError(TimeoutError):
    """No session slot came free in time (only when the wait counts against a deadline)."""


@dataclass
class SlotWait:
    """A wait for a slot of the account's limit: what a log line, the artifact and the
    ``arr.session.quota-wait`` event say."""

    limit_name: str
    flow_run_id: str | None
    limit: int | None = None
    """The limit's size (read when the wait starts)."""
    in_use: int | None = None
    """Slots taken when the wait started."""
    started_at: float = 0.0
    """``time.monotonic()`` when the wait started."""
    waited_seconds: float = 0.0

    def describe(self) -> str:
        taken = (
            f"{self.in_use} of {self.limit} slots in use"
            if self.limit is not None and self.in_use is not None
            else "every slot in use"
        )
        return f"Prefect concurrency limit '{self.limit_name}' ({taken})"


WaitPhase = Literal["waiting", "still waiting", "acquired", "gave up"]


async def report_slot_wait(wait: SlotWait, phase: WaitPhase) -> None:
    """Make a wait for a slot visible: the run's log and its ``session-slot-wait`` artifact.

    The one place every wait passes through (when it starts, every 30 s, when it ends):
    the hook for the ``arr.session.quota-wait`` event.
    """
    logger = run_logger()
    waited = _duration(wait.waited_seconds)
    emit_quota_wait(
        wait.limit_name,
        wait.waited_seconds,
        run=wait.flow_run_id,
        phase=phase,
        limit_size=wait.limit,
        in_use=wait.in_use,
    )
    if phase == "waiting":
        logger.info(
            "Waiting for a session slot: %s; the session is created once one is free",
            wait.describe(),
        )
        text = f"Waiting for a slot of {wait.describe()}."
    elif phase == "still waiting":
        logger.info("Still waiting for a session slot of '%s' (%s)", wait.limit_name, waited)
        return
    elif phase == "acquired":
        logger.info("Got a session slot of '%s' after waiting %s", wait.limit_name, waited)
        text = f"Waited {waited} for a slot of {wait.describe()}."
    else:
        logger.error("Gave up waiting for a session slot of '%s' after %s", wait.limit_name, waited)
        text = f"Gave up after {waited} waiting for a slot of {wait.describe()}."
    if wait.flow_run_id is None or (FlowRunContext.get() is None and TaskRunContext.get() is None):
        return  # an artifact belongs to a run (Prefect deprecates one made outside a run)
    try:
        with anyio.fail_after(10):
            await acreate_markdown_artifact(
                markdown=f"## Session slot\n\n{text}\n",
                key=SLOT_WAIT_ARTIFACT_KEY,
                description="Wait for a slot of the account's session quota",
            )
    except Exception as exc:  # noqa: BLE001 - the artifact is informative, never fatal
        logger.debug("could not publish the slot-wait artifact: %s", exc)


def _no_limit_logged(limit_name: str, ago: float | None) -> None:
    """The run's one line saying its sessions take no slot (``ago``: when this process
    learnt it for another run, if it did not just ask)."""
    when = "" if ago is None else f" (as this process learnt {_duration(ago)} ago)"
    run_logger().info(
        "No Prefect global concurrency limit named '%s'%s: the account's session quota"
        " is not enforced for this run",
        limit_name,
        when,
    )


def _why(exc: BaseException) -> str:
    """An exception as a log line's reason, never empty (a timeout has no message)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {_duration(_RELEASE_TIMEOUT_SECONDS)}"
    return str(exc) or type(exc).__name__


def _is_transient(exc: BaseException) -> bool:
    """A Prefect API failure worth retrying: no answer, or a 5xx."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


class SessionSlot:
    """One slot of the account's session limit, leased, renewed and given back.

    ``acquire`` waits until a slot is free (or the limit does not exist), ``release``
    gives it back; between the two a background task renews the lease every quarter of
    ``lease_seconds``. ``deadline`` (a time on ``clock``) bounds the wait when the wait
    counts against the ready timeout.
    """

    def __init__(
        self,
        limit_name: str,
        *,
        lease_seconds: float = 60.0,
        flow_run_id: str | None = None,
        renew_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 60 <= lease_seconds <= 86400:
            # The server refuses leases outside this range (422).
            raise ValueError(f"a slot lease must be 60 to 86400 seconds, got {lease_seconds!r}")
        self.limit_name = limit_name
        self.lease_seconds = float(lease_seconds)
        self.renew_every = renew_every if renew_every is not None else self.lease_seconds / 4
        if not 0 < self.renew_every < self.lease_seconds:
            raise ValueError("renew_every must be positive and shorter than the lease")
        self.flow_run_id = flow_run_id
        self.clock = clock
        self.lease_id: UUID | None = None
        self.enforced = False
        """True once a slot of an existing limit is held."""
        self.wait: SlotWait | None = None
        self.renewals = 0
        self.ready_timeout_left: float | None = None
        """What is left of the ready timeout once a slot is held (set by the caller)."""
        self._client: PrefectClient | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def waited_seconds(self) -> float:
        return self.wait.waited_seconds if self.wait is not None else 0.0

    def _holder(self) -> ConcurrencyLeaseHolder | None:
        if self.flow_run_id is None:
            return None
        return ConcurrencyLeaseHolder(type="flow_run", id=UUID(self.flow_run_id))

    async def _try_acquire(self, client: PrefectClient) -> float | None:
        """One attempt: None when done (held, or no limit), else seconds to wait."""
        try:
            async with _slot_gate():
                response = await client.increment_concurrency_slots_with_lease(
                    names=[self.limit_name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=self.lease_seconds,
                    holder=self._holder(),
                )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:
                _learnt(self._limit_key(client), exists=True)  # every slot taken: it exists
                return float(exc.response.headers.get("Retry-After", _RETRY_SECONDS))
            if _is_transient(exc):
                run_logger().warning(
                    "Could not ask for a session slot of '%s' (%s); retrying",
                    self.limit_name,
                    exc,
                )
                return _RETRY_SECONDS
            raise
        except httpx.TransportError as exc:
            run_logger().warning(
                "Could not reach the Prefect API for a session slot of '%s' (%s); retrying",
                self.limit_name,
                exc,
            )
            return _RETRY_SECONDS
        body: dict[str, Any] = response.json()
        lease_id = UUID(body["lease_id"])
        if not body.get("limits"):
            # No such limit: the server made an empty lease; hand it back, quota off (for
            # the rest of this flow run: its other sessions do not ask again).
            _learnt(self._limit_key(client), exists=False)
            with contextlib.suppress(Exception):
                async with _slot_gate():
                    await client.release_concurrency_slots_with_lease(lease_id=lease_id)
            _no_limit_logged(self.limit_name, None)
            return None
        self.lease_id = lease_id
        self.enforced = True
        _learnt(self._limit_key(client), exists=True)
        return None

    def _limit_key(self, client: PrefectClient) -> _LimitKey:
        return (str(client.api_url), self.flow_run_id or "", self.limit_name)

    async def _first_attempt(self, client: PrefectClient) -> float | None:
        """The first :meth:`_try_acquire`, unless this flow run already learnt that the
        limit does not exist. Until the run knows whether it exists, a session whose
        sibling is already asking waits for that answer instead of asking too: 200
        sessions starting together ask once when there is no limit; once it is known to
        exist, each asks for its own slot at once."""
        key = self._limit_key(client)
        loop = asyncio.get_running_loop()
        while True:
            exists = _LIMIT_EXISTS.get(key)
            if exists is False:
                return None
            if exists is None and (ago := _no_limit_seen_ago(key)) is not None:
                # Another run of this process asked moments ago: this run's answer too.
                _LIMIT_EXISTS[key] = False
                _no_limit_logged(self.limit_name, ago)
                return None
            if exists:
                # The limit exists: each session takes its own slot, side by side.
                return await self._try_acquire(client)
            asking = _ASKING.get((loop, key))
            if asking is None:
                break
            # Shielded: a cancel of ours must not cancel the question other sessions await.
            await asyncio.shield(asking)
        answered: asyncio.Future[None] = loop.create_future()
        _ASKING[(loop, key)] = answered
        try:
            if _no_limit_seen_before(key) and await self._still_missing(client):
                _learnt(key, exists=False)
                _no_limit_logged(self.limit_name, None)
                return None
            return await self._try_acquire(client)
        finally:
            del _ASKING[(loop, key)]
            answered.set_result(None)

    async def _still_missing(self, client: PrefectClient) -> bool:
        """Whether the limit this process last found missing is missing still, by one read.

        Asking for a slot of a missing limit is two writes (an empty lease, and giving it
        back), and a SQLite-backed server busy recording other runs' events answers such a
        write with a 503 now and then, which Prefect's client retries seconds later: one
        render_batch run in about 24 waited 1.7-2.5 s for it. False (ask for a slot, as
        usual) when the limit exists or the read fails.
        """
        try:
            async with _slot_gate():
                await client.read_global_concurrency_limit_by_name(self.limit_name)
        except ObjectNotFound:
            return True
        except Exception:  # noqa: BLE001 - asking for a slot handles every failure
            return False
        return False

    async def _describe_limit(self, client: PrefectClient, wait: SlotWait) -> None:
        with contextlib.suppress(Exception):
            limit = await client.read_global_concurrency_limit_by_name(self.limit_name)
            wait.limit, wait.in_use = limit.limit, limit.active_slots

    async def acquire(
        self,
        *,
        deadline: float | None = None,
        deadline_clock: Callable[[], float] | None = None,
        timeout_reason: str = "",
    ) -> None:
        """Take a slot, waiting as long as it takes (or until ``deadline`` on
        ``deadline_clock``, then :class:`SlotWaitTimeoutError`)."""
        self._client = get_client()
        await self._client.__aenter__()
        try:
            await self._acquire(self._client, deadline, deadline_clock, timeout_reason)
        except BaseException:
            await self._close()
            raise
        if self.enforced:
            self._keeper = asyncio.get_running_loop().create_task(
                self._keep(), name=f"session-slot-{self.limit_name}"
            )
        else:
            await self._close()

    async def _acquire(
        self,
        client: PrefectClient,
        deadline: float | None,
        deadline_clock: Callable[[], float] | None,
        timeout_reason: str,
    ) -> None:
        retry_after = await self._first_attempt(client)
        if retry_after is None:
            return
        wait = self.wait = SlotWait(self.limit_name, self.flow_run_id, started_at=self.clock())
        await self._describe_limit(client, wait)
        await report_slot_wait(wait, "waiting")
        next_progress = wait.started_at + PROGRESS_EVERY_SECONDS
        try:
            while retry_after is not None:
                # Honour Retry-After, in slices so that a deadline is noticed on time.
                ask_again = self.clock() + retry_after
                while (left := ask_again - self.clock()) > 0:
                    if (
                        deadline is not None
                        and deadline_clock is not None
                        and deadline_clock() >= deadline
                    ):
                        wait.waited_seconds = self.clock() - wait.started_at
                        raise SlotWaitTimeoutError(
                            f"no session slot came free: {wait.describe()}, waited"
                            f" {_duration(wait.waited_seconds)}{timeout_reason}. Stop a"
                            " session, raise the limit, or let the wait not count"
                            " against the ready timeout"
                        )
                    await asyncio.sleep(min(left, 0.5))
                wait.waited_seconds = self.clock() - wait.started_at
                if self.clock() >= next_progress:
                    next_progress += PROGRESS_EVERY_SECONDS
                    await report_slot_wait(wait, "still waiting")
                retry_after = await self._try_acquire(client)
        except BaseException:
            wait.waited_seconds = self.clock() - wait.started_at
            with anyio.CancelScope(shield=True):
                await report_slot_wait(wait, "gave up")
            raise
        wait.waited_seconds = self.clock() - wait.started_at
        await report_slot_wait(wait, "acquired")

    async def _keep(self) -> None:
        """Renew the lease every quarter of it; retry failures until it would run out."""
        assert self._client is not None
        assert self.lease_id is not None
        period = self.renew_every
        last_renewed = self.clock()
        delay = period
        while True:
            await asyncio.sleep(delay)
            try:
                async with _slot_gate():
                    await self._client.renew_concurrency_lease(
                        lease_id=self.lease_id, lease_duration=self.lease_seconds
                    )
            except Exception as exc:  # noqa: BLE001 - decided below: retry or give up
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 410:
                    run_logger().error(
                        "The Prefect server no longer knows this run's session slot of '%s'"
                        " (lease %s): it expired, or the server restarted with leases kept in"
                        " memory (set PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE on the server;"
                        " see the README's 'Running a fleet'). The session goes on; the"
                        " account quota may be exceeded until it ends",
                        self.limit_name,
                        self.lease_id,
                    )
                    return
                left = self.lease_seconds - (self.clock() - last_renewed)
                run_logger().warning(
                    "Could not renew the session slot of '%s' (%s); retrying, %.0f s of"
                    " its lease left",
                    self.limit_name,
                    exc,
                    max(0.0, left),
                )
                delay = _RETRY_SECONDS
                continue
            self.renewals += 1
            last_renewed = self.clock()
            delay = period

    async def release(self) -> None:
        """Give the slot back (to completion despite cancellation, bounded in time)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(keeper, return_exceptions=True)
        lease_id, self.lease_id = self.lease_id, None
        try:
            if lease_id is not None and self._client is not None:
                with anyio.CancelScope(shield=True):
                    await self._release(self._client, lease_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _release(self, client: PrefectClient, lease_id: UUID) -> None:
        # The deadline bounds the server's answers, not the turn at the gate: 200 sessions
        # ending together queue there, and none of them should give up for that.
        deadline: float | None = None
        while True:
            try:
                async with _slot_gate():
                    if deadline is None:
                        deadline = self.clock() + _RELEASE_TIMEOUT_SECONDS
                    with anyio.fail_after(max(1.0, deadline - self.clock())):
                        await client.release_concurrency_slots_with_lease(lease_id=lease_id)
                return
            except Exception as exc:  # noqa: BLE001 - the lease still bounds the slot
                over = deadline is None or self.clock() >= deadline
                if not _is_transient(exc) or over:
                    run_logger().warning(
                        "Could not give back the session slot of '%s' (%s); the server"
                        " frees it when its lease runs out, within %s",
                        self.limit_name,
                        _why(exc),
                        _duration(slot_return_bound(self.lease_seconds)),
                    )
                    return
                await asyncio.sleep(_RETRY_SECONDS)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def session_slot(
    limit_name: str | None,
    *,
    lease_seconds: float,
    flow_run_id: str | None,
    deadline: float | None = None,
    deadline_clock: Callable[[], float] | None = None,
    timeout_reason: str = "",
) -> AsyncIterator[SessionSlot | None]:
    """Hold a slot of ``limit_name`` for the body (none when the name is empty or there is
    no flow run: outside Prefect there is no server to keep the count)."""
    if not limit_name or flow_run_id is None:
        yield None
        return
    slot = SessionSlot(limit_name, lease_seconds=lease_seconds, flow_run_id=flow_run_id)
    await slot.acquire(
        deadline=deadline, deadline_clock=deadline_clock, timeout_reason=timeout_reason
    )
    try:
        yield slot
    finally:
        await slot.release()
