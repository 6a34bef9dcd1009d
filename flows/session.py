"""Provision a session for some work and guarantee it is stopped: ``rendering_session``.

Teardown in depth (DESIGN.md), the layers this module provides:

1. ``try/finally`` around create…stop, with the stop shielded from cancellation (anyio
   cancel scopes re-cancel every ``await`` inside a cancelled scope, so an unshielded
   cleanup after a flow timeout would itself be cancelled).
2. Ownership recorded on the flow run the moment the session exists (a flow-run tag
   ``arr-session:<id>`` and an ``arr.session.created`` event), so Prefect hooks running in
   another process (``on_cancellation`` runs in the runner) and the orphan reaper can find
   and stop it: :func:`stop_owned_sessions`. A session made with a saved credentials
   block also tags the run ``arr-credentials:<block name>`` (the name, never the key), so
   the hooks reach the same account.
3. A rolling lease (:class:`LeaseKeeper`): the session is created with a short lease and
   renewed ahead of expiry while the work runs, so if everything else dies the service
   itself ends the session within one renewal period.
4. A worker watchdog: a flow-run process whose Prefect worker was killed lives on as an
   orphan that nobody can cancel (Prefect delivers a cancel through the worker) while its
   keeper goes on renewing the lease. When the process that started the flow run is gone,
   the work is stopped and the session with it (:class:`WorkerLostError`).
5. The account's session quota (:mod:`arr_prefect.flows.quota`): a leased slot of a Prefect
   global concurrency limit, taken before the create and given back after the stop.
6. A session guard (:mod:`arr_prefect.guard`): in a flow run started by a worker, a helper
   process stops the sessions the moment the flow-run process dies, even by SIGKILL (no
   ``finally`` runs then, and Prefect's crash hook starts seconds later in a new process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar
from uuid import UUID

import anyio
from prefect import get_client
from prefect.client.schemas.objects import Flow, FlowRun, State
from prefect.logging import get_logger

from arr_prefect import tasks
from arr_prefect.client import ArrClient, new_session_id
from arr_prefect.clock import Clock
from arr_prefect.credentials import RemoteRenderingCredentials, load_credentials, open_client_for
from arr_prefect.errors import (
    ArrError,
    ConfigurationError,
    InvalidLeaseError,
    SessionEndedError,
    SessionExpiredError,
    SessionFailedError,
    SessionNotFoundError,
)
from arr_prefect.flows.events import (
    RunRef,
    current_run,
    emit_session_event,
    run_of,
    session_payload,
)
from arr_prefect.flows.progress import ready_wait_progress
from arr_prefect.flows.quota import SessionSlot, session_limit_name, session_slot
from arr_prefect.guard import SessionGuard, session_guard
from arr_prefect.models import MAX_LEASE, Session, SessionSize, parse_lease
from arr_prefect.tasks.sessions import run_logger
from arr_prefect.units import billed_minutes, format_billing, format_duration

__all__ = [
    "CREDENTIALS_TAG_PREFIX",
    "OWNER_TAG_PREFIX",
    "LeaseKeeper",
    "SessionReport",
    "WorkerLostError",
    "credentials_blocks_of",
    "emit_session_event",
    "owned_session_ids",
    "record_session_owner",
    "rendering_session",
    "stop_owned_sessions",
]

OWNER_TAG_PREFIX = "arr-session:"
"""Flow runs that own a session carry the tag ``arr-session:<session id>``."""

CREDENTIALS_TAG_PREFIX = "arr-credentials:"
"""Flow runs that made a session with a saved credentials block carry the tag
``arr-credentials:<block name>``: how hooks in another process find the account."""

# How long teardown may take to stop a session before giving up (the lease and the
# reaper still end it).
STOP_TIMEOUT_SECONDS = 120.0
# A v1 create may spend a while reconciling a lost answer; it is shielded from
# cancellation (so the session's ID is always learnt) for at most this long.
CREATE_SHIELD_SECONDS = 300.0

# How often a flow run started by a worker checks that the worker is still there.
WORKER_CHECK_SECONDS = 1.0

# When the owner tags could not be written (the Prefect API away: a server restart, its
# database down), they are written again this often while the session lives.
OWNER_TAG_RETRY_SECONDS = 5.0
# ... and, once the session is stopped, waited for at most this long before giving up.
OWNER_TAG_LAST_WAIT = 60.0


def _starting_worker_pid() -> int | None:
    """The PID of the Prefect worker (or runner) that started this flow-run process.

    A worker starts each flow run as its own child with ``PREFECT__FLOW_RUN_ID`` in the
    environment; read at import, which happens as the run loads its flow. None when the
    process was not started that way (in-process runs, tests, a container's PID 1).
    """
    if not os.environ.get("PREFECT__FLOW_RUN_ID"):
        return None
    parent = os.getppid()
    return parent if parent > 1 else None


_WORKER_PID = _starting_worker_pid()

_owned: dict[str, set[str]] = {}
# The credentials each session of this process was made with, for hooks running here
# (an unsaved block has no name another process could load).
_credentials_of: dict[str, RemoteRenderingCredentials] = {}


class _TagWriter:
    """Adds tags to one flow run, in batches: all the tags asked for while a write is in
    flight go together in the next one (one read of the run's tags, one update).

    Each read-then-update must not overlap another (the second would drop the first's
    tag), and a write per tag under a lock made 200 sessions starting together wait for
    400 API calls one after the other. ``add`` returns once its tag is written.
    """

    def __init__(self, flow_run_id: UUID) -> None:
        self.flow_run_id = flow_run_id
        self._pending: dict[str, None] = {}  # an ordered set: tags keep their order
        self._batch: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def add(self, tags: list[str]) -> None:
        loop = asyncio.get_running_loop()
        self._pending.update(dict.fromkeys(tags))
        if self._batch is None:
            self._batch = loop.create_future()
        batch = self._batch
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="arr-tag-writer")
        await asyncio.shield(batch)

    async def _write(self) -> None:
        while self._pending:
            tags, self._pending = self._pending, {}
            batch, self._batch = self._batch, None
            assert batch is not None
            try:
                async with get_client() as prefect:
                    run = await prefect.read_flow_run(self.flow_run_id)
                    missing = [t for t in tags if t not in run.tags]
                    if missing:
                        await prefect.update_flow_run(self.flow_run_id, tags=[*run.tags, *missing])
            except Exception as exc:  # noqa: BLE001 - handed to every waiter of the batch
                if not batch.done():
                    batch.set_exception(exc)
                    batch.exception()  # retrieved here too: a cancelled waiter may not
            else:
                if not batch.done():
                    batch.set_result(None)


_tag_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _TagWriter]] = (
    weakref.WeakKeyDictionary()
)


def _current_flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return str(context.flow_run.id)
    return None


async def record_session_owner(
    session_id: str,
    flow_run_id: str | None = None,
    *,
    api_version: str | None = None,
    credentials: RemoteRenderingCredentials | None = None,
    size: str | None = None,
    lease_seconds: float | None = None,
) -> bool:
    """Tie a session to a flow run (the current one by default), before anything can fail.

    Records it in this process, as the flow-run tag ``arr-session:<id>`` and as an
    ``arr.session.created`` event, so :func:`stop_owned_sessions` (in any process) and the
    orphan reaper can find it. Call it right after ``create_session`` when composing the
    tasks by hand; :func:`rendering_session` does it for you. Pass the ``credentials``
    the session was made with: a saved block's name is tagged too
    (``arr-credentials:<name>``) so hooks in another process reach the same account.
    Returns False when the tags could not be written (``rendering_session`` then keeps
    trying while the session lives).
    """
    flow_run_id = flow_run_id if flow_run_id is not None else _current_flow_run_id()
    block = credentials.block_name if credentials is not None else None
    tagged = True  # outside a flow run there is no run to tag, only the event to send
    if flow_run_id is not None:
        tagged = await _tag_owner(session_id, flow_run_id, credentials)
    emit_session_event(
        "arr.session.created",
        session_id,
        flow_run_id,
        session_payload(
            session_id,
            size=size,
            api_version=api_version,
            elapsed_seconds=0.0,
            lease_seconds=lease_seconds,
            credentials_block=block or "",
        ),
    )
    return tagged


async def _tag_owner(
    session_id: str, flow_run_id: str, credentials: RemoteRenderingCredentials | None
) -> bool:
    """The flow-run side of :func:`record_session_owner`: this process's record and the
    run's tags. False when the tags could not be written."""
    _owned.setdefault(flow_run_id, set()).add(session_id)
    block = credentials.block_name if credentials is not None else None
    if credentials is not None:
        _credentials_of[session_id] = credentials
        if block is None:
            run_logger().warning(
                "Session %s uses credentials that are not a saved block: a teardown hook"
                " run in another process, and the reaper, will use the ARR_* settings"
                " there instead. Save the block and load it by name to avoid this",
                session_id,
            )
    tags = _owner_tags(session_id, block)
    try:
        await _tag_flow_run(flow_run_id, tags)
    except Exception as exc:  # noqa: BLE001 - recording must never lose the session
        run_logger().warning(
            "Could not tag flow run %s with %s (%s); the rolling lease still bounds the session",
            flow_run_id,
            ", ".join(tags),
            exc,
        )
        return False
    return True


def _owner_tags(session_id: str, block: str | None) -> list[str]:
    tags = [f"{OWNER_TAG_PREFIX}{session_id}"]
    if block is not None:
        tags.append(f"{CREDENTIALS_TAG_PREFIX}{block}")
    return tags


async def _tag_flow_run(flow_run_id: str, tags: list[str]) -> None:
    """Add ``tags`` to the flow run through its batching writer (raises when the Prefect
    API cannot be reached)."""
    writers = _tag_writers.setdefault(asyncio.get_running_loop(), {})
    writer = writers.get(flow_run_id)
    if writer is None:
        writer = writers[flow_run_id] = _TagWriter(UUID(flow_run_id))
    await writer.add(tags)


async def _tag_until_recorded(flow_run_id: str, tags: list[str]) -> None:
    """Write owner tags that could not be written at first, retrying until they are: a
    Prefect server restarting (or its database away) must not lose a run's ownership."""
    while True:
        await asyncio.sleep(OWNER_TAG_RETRY_SECONDS)
        try:
            await _tag_flow_run(flow_run_id, tags)
        except Exception as exc:  # noqa: BLE001 - retried until the session ends
            get_logger("arr.flows").debug("still cannot tag flow run %s: %s", flow_run_id, exc)
            continue
        run_logger().info("Flow run tagged with %s after all", ", ".join(tags))
        return


async def _run_tags(flow_run_id: str) -> list[str]:
    try:
        async with get_client() as prefect:
            run = await prefect.read_flow_run(UUID(flow_run_id))
    except Exception as exc:  # noqa: BLE001 - callers fall back to what this process knows
        get_logger("arr.flows").warning(
            "could not read the tags of flow run %s: %s", flow_run_id, exc
        )
        return []
    return list(run.tags)


async def owned_session_ids(flow_run_id: str | UUID) -> set[str]:
    """Session IDs a flow run owns: recorded in this process, or as tags on the run."""
    key = str(flow_run_id)
    ids = set(_owned.get(key, ()))
    tags = await _run_tags(key)
    ids.update(t[len(OWNER_TAG_PREFIX) :] for t in tags if t.startswith(OWNER_TAG_PREFIX))
    return ids


async def credentials_blocks_of(flow_run: FlowRun) -> list[str]:
    """Names of the saved credentials blocks a flow run made sessions with: its
    ``arr-credentials:`` tags, and its ``credentials_block`` parameter (render-batch's)."""
    tags = await _run_tags(str(flow_run.id))
    names = [t[len(CREDENTIALS_TAG_PREFIX) :] for t in tags if t.startswith(CREDENTIALS_TAG_PREFIX)]
    parameter = (flow_run.parameters or {}).get("credentials_block")
    if isinstance(parameter, str) and parameter.strip() and parameter.strip() not in names:
        names.append(parameter.strip())
    return names


async def stop_owned_sessions(flow: Flow | Any, flow_run: FlowRun, state: State[Any]) -> None:
    """Flow hook (``on_cancellation``, ``on_crashed``): stop every session the run owns.

    Works in the flow-run process and outside it (Prefect runs ``on_cancellation`` in the
    runner after killing the flow-run process): the sessions are found from the run's
    ``arr-session:`` tags. Stopping is idempotent, so running after ``finally`` is harmless.
    The account: the credentials the session was made with when this process made it,
    else each saved block the run recorded (``arr-credentials:`` tags, or render-batch's
    ``credentials_block`` parameter), else the ``ARR_*`` settings of this process; a
    session not found in one account is looked for in the next.
    """
    logger = get_logger("arr.teardown")
    ids = await owned_session_ids(flow_run.id)
    if not ids:
        return
    pending = set(ids)
    accounts: list[tuple[str, RemoteRenderingCredentials | None, set[str] | None]] = []
    local: dict[int, tuple[RemoteRenderingCredentials, set[str]]] = {}
    for session_id in ids:
        if (credentials := _credentials_of.get(session_id)) is not None:
            local.setdefault(id(credentials), (credentials, set()))[1].add(session_id)
    accounts += [("the credentials it was made with", c, only) for c, only in local.values()]
    for name in await credentials_blocks_of(flow_run):
        try:
            accounts.append((f"credentials block {name!r}", await load_credentials(name), None))
        except Exception as exc:  # noqa: BLE001 - the other accounts may still reach it
            logger.error(
                "Flow run %s: cannot load the credentials block %r its sessions were made"
                " with (%s); trying the ARR_* settings instead",
                flow_run.name,
                name,
                exc,
            )
    accounts.append(("the ARR_* settings", None, None))
    for label, credentials, only in accounts:
        targets = sorted(pending if only is None else pending & only)
        if not targets:
            continue
        try:
            async with open_client_for(credentials) as arr:
                for session_id in targets:
                    seen: list[Session] = []
                    asked = arr.clock.time()
                    try:
                        outcome = await _stop_if_active(arr, session_id, logger, seen)
                    except ArrError as exc:
                        logger.error(
                            "Flow run %s (%s): could not stop session %s with %s: %s",
                            flow_run.name,
                            state.name,
                            session_id,
                            label,
                            exc,
                        )
                        continue
                    if outcome == "absent":
                        continue  # unknown to this account: the next one may know it
                    pending.discard(session_id)
                    if outcome == "stopped":
                        final = await _final_status(arr, session_id)
                        _report_hook_stop(
                            arr, flow_run, state, session_id, seen, asked, final, logger
                        )
        except ConfigurationError as exc:
            log = logger.debug if len(accounts) > 1 else logger.error
            log("Flow run %s: no client from %s (%s)", flow_run.name, label, exc)


async def _final_status(arr: ArrClient, session_id: str) -> str | None:
    """The status a stopped session ended with, as the service reports it (None if it
    cannot be read within 30 s: the stop itself has already succeeded)."""
    with (
        contextlib.suppress(ArrError, TimeoutError),
        anyio.CancelScope(shield=True),
        anyio.fail_after(30),
    ):
        return (await arr.get_session(session_id)).status.value
    return None


def _report_hook_stop(
    arr: ArrClient,
    flow_run: FlowRun,
    state: State[Any],
    session_id: str,
    seen: list[Session],
    asked: float,
    final_status: str | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Log and emit a stop made by a hook: which hook, which session, how fast, the bill."""
    now = arr.clock.time()
    took = now - asked
    session = seen[0] if seen else None
    ran = _ran_seconds(session, now)
    logger.warning(
        "Flow run %s is %s: the %s hook stopped its session %s in %s (ran %s; billed %s)",
        flow_run.name,
        state.name,
        "on_crashed" if state.is_crashed() else "on_cancellation",
        session_id,
        format_duration(took),
        format_duration(ran),
        format_billing(ran),
    )
    size = session.size.value if session is not None and session.size else None
    emit_session_event(
        "arr.session.stopped",
        session_id,
        run_of(flow_run),
        session_payload(
            session_id,
            size=size,
            api_version=arr.api_version,
            elapsed_seconds=ran,
            price_per_hour=arr.settings.price_per_hour(size) if size else None,
            currency=arr.settings.price_currency,
            stopped_by=f"hook:{state.name}",
            reason=f"flow run {state.name}",
            final_status=final_status,
            stop_seconds=round(took, 1),
        ),
    )


def _ran_seconds(session: Session | None, now: float) -> float | None:
    """How long a session has run, from what the service says of it."""
    if session is None:
        return None
    if session.created_at is not None:
        return max(0.0, now - session.created_at.timestamp())
    return session.elapsed.total_seconds() if session.elapsed is not None else None


async def _stop_if_active(
    arr: ArrClient,
    session_id: str,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    seen: list[Session] | None = None,
) -> Literal["stopped", "over", "absent"]:
    """Stop the session if it is still active in ``arr``'s account (``seen`` gets the
    session as read before the stop)."""
    # Look first: a stop of a session already over is also answered 204, and the event
    # must say who really stopped it. If the look fails, stop anyway: stopping is
    # idempotent, and this may be the only layer left.
    try:
        current = await arr.get_session(session_id)
        if seen is not None:
            seen.append(current)
        if not current.status.is_active:
            return "over"
    except SessionNotFoundError:
        return "absent"
    except ArrError as exc:
        logger.warning("Could not read session %s (%s); stopping it", session_id, exc)
    return "stopped" if await arr.stop_session(session_id) else "absent"


class WorkerLostError(RuntimeError):
    """The Prefect worker that started this flow run is gone: the run can no longer be
    cancelled or watched, so its job is stopped and its session with it."""


def _silence_orphaned_output() -> None:
    """Point stdout/stderr at /dev/null if they are pipes: their reader, the worker, is dead.

    Otherwise the next log line hits a broken pipe, and Prefect's (rich) console handler
    answers that with ``SystemExit(1)`` wherever the line was logged, teardown included.
    """
    with open(os.devnull, "wb") as devnull:
        for fd in (1, 2):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.dup2(devnull.fileno(), fd)
            except OSError:
                continue


def _parent_pid() -> int:
    """This process's parent (the watchdog's one probe, replaceable in tests)."""
    return os.getppid()


async def _watch_worker(worker_pid: int, on_lost: Callable[[WorkerLostError], None]) -> None:
    """Call ``on_lost`` once this process's parent is no longer ``worker_pid``.

    An orphan is re-parented (to init or a subreaper), so a changed parent PID means the
    worker died. Real time, not the session clock: it watches a local process.
    """
    while True:
        parent = _parent_pid()
        if parent != worker_pid:
            _silence_orphaned_output()
            on_lost(
                WorkerLostError(
                    f"the Prefect worker (pid {worker_pid}) that started this flow run is"
                    f" gone (parent is now pid {parent}); nobody can cancel this run any"
                    " more, so its job and session are stopped"
                )
            )
            return
        await asyncio.sleep(WORKER_CHECK_SECONDS)


T = TypeVar("T")


async def finish_despite_cancel(
    awaitable: Awaitable[T], cancels_seen: list[BaseException] | None = None
) -> T:
    """Await ``awaitable`` to completion even if the caller is cancelled meanwhile.

    Teardown must not be cut short: an anyio shield stops anyio cancel scopes (Prefect's
    flow timeout) but not a plain ``task.cancel()`` (Ctrl-C, a TaskGroup, a pipeline's own
    cancel). The work runs as its own task; cancels that reach the caller while it runs are
    recorded in ``cancels_seen`` for the caller to re-raise once teardown is done.
    """
    task = asyncio.ensure_future(awaitable)
    with anyio.CancelScope(shield=True):
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError as exc:
                if task.done():
                    raise
                if cancels_seen is not None:
                    cancels_seen.append(exc)
    raise AssertionError("unreachable")  # pragma: no cover - the loop only returns or raises


@dataclass
class SessionReport:
    """What happened to the session of a :func:`rendering_session`, for summaries."""

    session_id: str | None = None
    size: str | None = None
    api_version: str | None = None
    created_at: float | None = None
    ready_at: float | None = None
    stopped_at: float | None = None
    final_status: str | None = None
    lease_renewals: int = 0
    stopped_by: str | None = None
    stop_error: str | None = None
    slot_limit: str | None = None
    """The Prefect concurrency limit a slot was held of (None: no quota enforced)."""
    slot_wait_seconds: float | None = None
    """Real seconds spent waiting for that slot (0 when one was free at once)."""
    notes: list[str] = field(default_factory=list)
    stop_started_at: float | None = None
    """When teardown began stopping the session (``stopped_at`` is when it was done)."""
    ended_reason: str | None = None
    """Why the session ended, when not by a plain stop (the service's Error message...)."""
    price_per_hour: float | None = None
    currency: str | None = None

    @property
    def time_to_ready(self) -> float | None:
        """Seconds from the create request to Ready."""
        if self.created_at is None or self.ready_at is None:
            return None
        return self.ready_at - self.created_at

    @property
    def run_seconds(self) -> float | None:
        """Seconds from the create request to the stop: what the service billed."""
        if self.created_at is None or self.stopped_at is None:
            return None
        return self.stopped_at - self.created_at

    @property
    def stop_seconds(self) -> float | None:
        """Seconds teardown took to stop the session."""
        if self.stop_started_at is None or self.stopped_at is None:
            return None
        return self.stopped_at - self.stop_started_at

    @property
    def billed_minutes(self) -> int | None:
        """Minutes billed: every minute started from the create request to the stop."""
        return billed_minutes(self.run_seconds)

    def payload(self, now: float, **extra: Any) -> dict[str, Any]:
        """The payload of an event about this session, as of ``now``."""
        assert self.session_id is not None
        return session_payload(
            self.session_id,
            size=self.size,
            api_version=self.api_version,
            elapsed_seconds=None if self.created_at is None else now - self.created_at,
            price_per_hour=self.price_per_hour,
            currency=self.currency,
            **extra,
        )


class LeaseKeeper:
    """Keeps a session on a short rolling lease while work runs.

    Every ``renew_every`` (half the ``lease`` by default) it makes the lease end ``lease``
    from now, sending the *total* since Ready (``elapsed + lease``: the API takes the total,
    not an increment). If the worker dies, the service ends the session within ``lease``.
    Renewal failures are retried sooner; if the session is found over (expired, stopped,
    Error) ``on_lost`` is called with the error and the keeper ends.

    The account: ``client`` if given, else ``credentials`` (a
    :class:`~arr_prefect.credentials.RemoteRenderingCredentials`), else ``ARR_*``; without
    a client the keeper opens its own while it runs::

        async with LeaseKeeper(session_id=session.id, lease=lease, credentials=credentials):
            await render(session)
    """

    def __init__(
        self,
        client: ArrClient | None = None,
        session_id: str | None = None,
        *,
        lease: timedelta,
        renew_every: timedelta | None = None,
        on_lost: Callable[[SessionEndedError], None] | None = None,
        on_renewed: Callable[[Session, int], None] | None = None,
        credentials: RemoteRenderingCredentials | None = None,
    ) -> None:
        if session_id is None:
            raise TypeError("LeaseKeeper needs the session_id of the session to keep")
        self.client = client
        self.credentials = credentials
        self._arr: ArrClient | None = None
        self.session_id = session_id
        self.lease = parse_lease(lease)
        self.renew_every = self.renewal_period(self.lease, renew_every)
        self.on_lost = on_lost
        self.on_renewed = on_renewed
        self.renewals = 0
        self.failures = 0
        self.lost: SessionEndedError | None = None
        self._task: asyncio.Task[None] | None = None
        self._at_max = False
        self._last_lease: timedelta | None = None

    async def __aenter__(self) -> LeaseKeeper:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @staticmethod
    def renewal_period(lease: timedelta, renew_every: timedelta | None = None) -> timedelta:
        """How often to renew: ``renew_every``, or half the lease; checked to be positive
        and shorter than the lease."""
        period = renew_every if renew_every is not None else lease / 2
        if not timedelta(0) < period < lease:
            raise InvalidLeaseError("renew_every must be positive and shorter than the lease")
        return period

    def start(self, current_lease: timedelta | None = None) -> None:
        """Start renewing in the background (``current_lease``: the lease the session has)."""
        self._last_lease = current_lease
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"lease-keeper-{self.session_id}"
            )

    async def stop(self) -> None:
        """Stop renewing (the session itself is left alone)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            await finish_despite_cancel(asyncio.gather(task, return_exceptions=True))
        elif not task.cancelled() and task.exception() is not None:
            run_logger().error("Lease keeper had died: %r", task.exception())

    async def renew(self) -> Session:
        """Renew once: make the lease end ``lease`` from now (nothing sent if it already does)."""
        if self._arr is not None:
            return await self._renew_with(self._arr)
        async with open_client_for(self.credentials, self.client) as arr:
            return await self._renew_with(arr)

    async def _renew_with(self, arr: ArrClient) -> Session:
        after = await arr.extend_session_by(self.session_id, self.lease)
        renewed = self._last_lease is not None and after.max_lease != self._last_lease
        if renewed:
            self.renewals += 1
        self._last_lease = after.max_lease
        if renewed and self.on_renewed is not None:
            self.on_renewed(after, self.renewals)
        if after.max_lease is not None and after.max_lease >= MAX_LEASE and not self._at_max:
            self._at_max = True
            run_logger().warning(
                "Session %s reached the 24 h maximum lease; it will expire at that limit",
                self.session_id,
            )
        return after

    async def _run(self) -> None:
        async with open_client_for(self.credentials, self.client) as arr:
            self._arr = arr
            try:
                await self._keep(arr.clock)
            finally:
                self._arr = None

    async def _keep(self, clock: Clock) -> None:
        delay = self.renew_every.total_seconds()
        logger = run_logger()
        while True:
            await clock.sleep(delay)
            try:
                session = await self.renew()
            except (SessionEndedError, SessionNotFoundError) as exc:
                lost = (
                    exc
                    if isinstance(exc, SessionEndedError)
                    else SessionExpiredError(
                        f"session {self.session_id} is gone: {exc}", session_id=self.session_id
                    )
                )
                self.lost = lost
                logger.error("Lease keeper: %s", lost)
                if self.on_lost is not None:
                    self.on_lost(lost)
                return
            except Exception as exc:  # noqa: BLE001 - a keeper that dies lets the lease run out
                self.failures += 1
                delay = max(1.0, self.renew_every.total_seconds() / 4)
                logger.warning(
                    "Lease keeper: renewing session %s failed (%s); retrying in %s",
                    self.session_id,
                    exc,
                    format_duration(delay),
                )
                continue
            delay = self.renew_every.total_seconds()
            logger.debug(
                "Lease keeper: session %s lease %s, elapsed %s",
                self.session_id,
                format_duration(
                    None if session.max_lease is None else session.max_lease.total_seconds()
                ),
                format_duration(
                    None if session.elapsed is None else session.elapsed.total_seconds()
                ),
            )


def _guard_for(arr: ArrClient) -> SessionGuard | None:
    """The session guard, in a flow-run process a worker started (None elsewhere: in
    tests, in-process runs, with an injected transport another process cannot use)."""
    if _WORKER_PID is None or not arr.settings.stop_on_process_death:
        return None
    if not arr.reaches_service_directly:
        return None
    return session_guard()


def _guard_watch(
    guard: SessionGuard, session_id: str, arr: ArrClient, flow_run_id: str | None
) -> None:
    """Register the session with the guard, with the flow run (and its flow and
    deployment) that the guard's ``arr.session.stopped`` event is to be related to."""
    ref = current_run()
    if ref is None or ref.flow_run_id != flow_run_id:
        ref = RunRef(flow_run_id) if flow_run_id is not None else None
    guard.watch(
        session_id,
        arr.settings,
        flow_run_id,
        flow_run_name=ref.flow_run_name if ref is not None else None,
        flow_id=ref.flow_id if ref is not None else None,
        deployment_id=ref.deployment_id if ref is not None else None,
    )


async def _stop_in_teardown(
    arr: ArrClient,
    session_id: str,
    report: SessionReport,
    use_task: bool,
    cancels_seen: list[BaseException] | None = None,
) -> None:
    """Stop the session: to completion despite cancellation, bounded in time."""

    async def stop() -> None:
        with anyio.fail_after(STOP_TIMEOUT_SECONDS):
            if use_task:
                try:
                    # No Prefect retries here: the client's own retries fit in the bound,
                    # and a Prefect retry delay would spend it waiting.
                    await tasks.astop_session.with_options(retries=0)(session_id, client=arr)
                    return
                except ArrError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the task machinery failed
                    run_logger().warning(
                        "stop-session task could not run (%s); stopping directly", exc
                    )
            await arr.stop_session(session_id)

    report.stop_started_at = arr.clock.time()
    try:
        await finish_despite_cancel(stop(), cancels_seen)
        report.stopped_by = "finally"
    except (ArrError, TimeoutError) as exc:
        report.stop_error = str(exc) or type(exc).__name__
        run_logger().error(
            "Could not stop session %s: %s. It stays tagged on the flow run; its lease"
            " and the orphan reaper will end it",
            session_id,
            report.stop_error,
        )
    finally:
        report.stopped_at = arr.clock.time()


@asynccontextmanager
async def _account_slot(
    arr: ArrClient, flow_run_id: str | None, ready_timeout: float | None, counts: bool
) -> AsyncIterator[SessionSlot | None]:
    """The account's session slot for one session, taken before it exists (see quota)."""
    settings = arr.settings
    name = session_limit_name(settings.session_limit, settings.account_id)
    budget = ready_timeout if ready_timeout is not None else settings.ready_timeout
    started = arr.clock.time()
    async with session_slot(
        name if settings.session_limit.strip() else None,
        lease_seconds=settings.session_slot_lease_seconds,
        flow_run_id=flow_run_id,
        deadline=started + budget if counts else None,
        deadline_clock=arr.clock.time,
        timeout_reason=f", and the wait counts against the ready timeout of {budget:.0f} s",
    ) as slot:
        if slot is not None:
            slot.ready_timeout_left = max(0.0, budget - (arr.clock.time() - started))
        yield slot


@asynccontextmanager
async def rendering_session(
    size: SessionSize | str = SessionSize.STANDARD,
    *,
    lease: timedelta | str | int | float = timedelta(minutes=10),
    renew_every: timedelta | None = None,
    ready_timeout: float | None = None,
    poll_interval: float | None = None,
    models: list[str] | None = None,
    client: ArrClient | None = None,
    report: SessionReport | None = None,
    ready_timeout_includes_slot_wait: bool = False,
    credentials: RemoteRenderingCredentials | None = None,
) -> AsyncIterator[Session]:
    """Create a session, wait until Ready, keep its lease rolling, and always stop it.

    ``lease`` is the rolling lease: the session never has more than that left, and the
    :class:`LeaseKeeper` renews it every ``renew_every`` (half of it by default) while the
    body runs; a killed worker leaks at most ``lease``. Use inside any flow::

        @flow
        async def my_pipeline():
            async with rendering_session("standard", lease=timedelta(minutes=10)) as session:
                await render(session.hostname, session.handshake_port)

    The session is stopped when the body ends, raises, times out or is cancelled, and when
    waiting for Ready fails. If the session is lost while the body runs (expired, stopped
    elsewhere, Error), the body is cancelled and the specific ``SessionEndedError`` raised.
    Pass a :class:`SessionReport` to learn timings, renewals and who stopped it.

    In a flow run, a slot of the account's Prefect concurrency limit (``ARR_SESSION_LIMIT``)
    is taken before the create and given back after the stop, so a fleet never runs more
    sessions than the account allows (:mod:`arr_prefect.flows.quota`). The wait for a free
    slot is logged and shown as an artifact; it counts against ``ready_timeout`` only with
    ``ready_timeout_includes_slot_wait=True``.

    The account: ``client`` if given, else ``credentials`` (a
    :class:`~arr_prefect.credentials.RemoteRenderingCredentials`; a saved one is recorded
    on the flow run by name, so the teardown hooks reach it from any process), else the
    ``ARR_*`` settings.
    """
    report = report if report is not None else SessionReport()
    rolling = parse_lease(lease)
    session_size = SessionSize.parse(size)
    LeaseKeeper.renewal_period(rolling, renew_every)  # refuse a bad period before creating
    flow_run_id = _current_flow_run_id()
    in_flow = flow_run_id is not None
    logger = run_logger()

    # What made the session, for the hooks: not the credentials when a client overrides them.
    used = credentials if client is None else None
    async with (
        open_client_for(credentials, client) as arr,
        _account_slot(arr, flow_run_id, ready_timeout, ready_timeout_includes_slot_wait) as slot,
    ):
        if slot is not None:
            report.slot_limit = slot.limit_name if slot.enforced else None
            report.slot_wait_seconds = slot.waited_seconds if slot.enforced else None
            if ready_timeout_includes_slot_wait and slot.wait is not None:
                ready_timeout = slot.ready_timeout_left
        report.size = session_size.value
        report.api_version = arr.api_version
        report.price_per_hour = arr.settings.price_per_hour(session_size.value)
        report.currency = arr.settings.price_currency

        async def record_owner(sid: str) -> bool:
            return await record_session_owner(
                sid,
                flow_run_id,
                api_version=arr.api_version,
                credentials=used,
                size=session_size.value,
                lease_seconds=rolling.total_seconds(),
            )

        session_id: str | None = None
        tagged = True
        if arr.api_version != "v1":
            # 2021-01-01: we choose the ID, so record it before the create is even sent.
            prefix = f"pf-{flow_run_id}" if flow_run_id else "arr"
            session_id = report.session_id = new_session_id(prefix)
            tagged = await record_owner(session_id)
        guard = _guard_for(arr)
        if guard is not None and session_id is not None:
            _guard_watch(guard, session_id, arr, flow_run_id)
        report.created_at = arr.clock.time()
        cancels_seen: list[BaseException] = []

        async def create() -> Session:
            with anyio.fail_after(CREATE_SHIELD_SECONDS):
                if in_flow:
                    return await tasks.acreate_session(
                        lease=rolling,
                        size=session_size,
                        models=models,
                        session_id=session_id,
                        client=arr,
                    )
                return await arr.create_session(
                    lease=rolling, size=session_size, models=models or (), session_id=session_id
                )

        try:
            # Once the request is out, learning the session's ID matters more than reacting
            # to a cancel a few seconds sooner: the cancel is held until the ID is known.
            session = await finish_despite_cancel(create(), cancels_seen)
        except BaseException:
            if session_id is not None:
                # The PUT may have reached the service: stopping an unknown ID is harmless.
                await _stop_in_teardown(arr, session_id, report, use_task=False)
                if guard is not None and report.stop_error is None:
                    guard.release(session_id)
            raise
        report.session_id = session.id
        if guard is not None and session_id is None:
            _guard_watch(guard, session.id, arr, flow_run_id)

        host = asyncio.current_task()
        body_lost: SessionEndedError | WorkerLostError | None = None

        def on_lost(error: SessionEndedError | WorkerLostError) -> None:
            nonlocal body_lost
            if host is not None and not host.done() and body_lost is None:
                body_lost = error
                host.cancel(f"session {session.id}: {error}")

        def on_renewed(renewed: Session, renewals: int) -> None:
            emit_session_event(
                "arr.session.lease-renewed",
                renewed.id,
                flow_run_id,
                report.payload(
                    arr.clock.time(),
                    lease_seconds=rolling.total_seconds(),
                    renewals=renewals,
                ),
            )

        keeper = LeaseKeeper(
            arr,
            session.id,
            lease=rolling,
            renew_every=renew_every,
            on_lost=on_lost,
            on_renewed=on_renewed,
        )
        watchdog: asyncio.Task[None] | None = None
        tagger: asyncio.Task[None] | None = None
        try:
            if cancels_seen:
                raise asyncio.CancelledError  # held back during the create; now stop it
            if arr.api_version == "v1":
                # Inside the try: a cancel arriving while the tag is written still stops it.
                tagged = False
                with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                    tagged = await record_owner(session.id)
            if not tagged and flow_run_id is not None:
                block = used.block_name if used is not None else None
                tagger = asyncio.get_running_loop().create_task(
                    _tag_until_recorded(flow_run_id, _owner_tags(session.id, block)),
                    name=f"owner-tags-{session.id}",
                )
            if in_flow:
                timeout = ready_timeout if ready_timeout is not None else arr.settings.ready_timeout
                async with ready_wait_progress(
                    session.id, arr.clock, report.created_at, timeout
                ) as progress:
                    session = await tasks.await_until_ready(
                        session.id,
                        timeout=ready_timeout,
                        poll_interval=poll_interval,
                        client=arr,
                        created_at=report.created_at,
                    )
                report.ready_at = arr.clock.time()
                if progress.artifact_id is not None:  # none for a wait too short to show
                    await progress.update(
                        100,
                        f"Session {session.id} is Ready,"
                        f" {format_duration(report.time_to_ready)} after the create request",
                    )
            else:
                session = await arr.wait_until_ready(
                    session.id, timeout=ready_timeout, poll_interval=poll_interval
                )
                report.ready_at = arr.clock.time()
            emit_session_event(
                "arr.session.ready",
                session.id,
                flow_run_id,
                report.payload(
                    report.ready_at,
                    time_to_ready_seconds=round(report.time_to_ready or 0.0, 1),
                    hostname=session.hostname,
                ),
            )
            keeper.start(session.max_lease)
            if _WORKER_PID is not None and arr.settings.stop_on_worker_loss:
                watchdog = asyncio.get_running_loop().create_task(
                    _watch_worker(_WORKER_PID, on_lost), name=f"worker-watchdog-{session.id}"
                )
            try:
                yield session
            except asyncio.CancelledError:
                if body_lost is not None and host is not None and host.uncancel() == 0:
                    if isinstance(body_lost, WorkerLostError):
                        logger.error("%s", body_lost)
                    raise body_lost from None
                raise
        except (SessionFailedError, SessionExpiredError) as exc:
            # The service ended it (Error, or the lease ran out): say so, for Automations.
            report.ended_reason = str(exc)
            failed = isinstance(exc, SessionFailedError)
            emit_session_event(
                "arr.session.failed" if failed else "arr.session.expired",
                session.id,
                flow_run_id,
                report.payload(arr.clock.time(), reason=str(exc)),
            )
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await keeper.stop()
            report.lease_renewals = keeper.renewals
            held = len(cancels_seen)
            await _stop_in_teardown(arr, session.id, report, in_flow, cancels_seen)
            if report.stop_error is None:
                _credentials_of.pop(session.id, None)
                if guard is not None:
                    guard.release(session.id)
                report.final_status = await _final_status(arr, session.id)
                emit_session_event(
                    "arr.session.stopped",
                    session.id,
                    flow_run_id,
                    report.payload(
                        report.stopped_at or arr.clock.time(),
                        stopped_by="finally",
                        reason=report.ended_reason,
                        final_status=report.final_status,
                        stop_seconds=(
                            None if report.stop_seconds is None else round(report.stop_seconds, 1)
                        ),
                    ),
                )
            logger.info(
                "Session %s stopped by %s in %s: %s after %s; billed %s; %d lease renewals",
                session.id,
                report.stopped_by or "nobody (stop failed)",
                format_duration(report.stop_seconds),
                report.final_status or "status unknown",
                format_duration(report.run_seconds),
                format_billing(report.run_seconds),
                report.lease_renewals,
            )
            if tagger is not None:
                # The session is down; its ownership record outlives it: a last chance for
                # a tag the Prefect API could not take yet.
                with anyio.CancelScope(shield=True), anyio.move_on_after(OWNER_TAG_LAST_WAIT):
                    await asyncio.wait([tagger])
                tagger.cancel()
            if len(cancels_seen) > held:
                # A cancel arrived while the stop ran: deliver it now that the session is down.
                raise asyncio.CancelledError
