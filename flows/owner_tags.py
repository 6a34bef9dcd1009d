"""Every session is traceable to the flow run that owns it: the owner tags.

The moment a session exists (for 2021-01-01, before its create is even sent: the client
names it), it is recorded in this process, as the flow-run tag ``arr-session:<id>`` and
as an ``arr.session.created`` event. The flow hooks (:mod:`arr_prefect.flows.hooks`),
which Prefect may run in another process, and the orphan reaper find it from there. A
session made with a saved credentials block also tags the run ``arr-credentials:<block
name>`` (the name, never the key), so the hooks reach the same account.

Tags the Prefect API cannot take at first (a server restarting, its database away) are
written again every :data:`OWNER_TAG_RETRY_SECONDS` while the session lives, and waited
for at most :data:`OWNER_TAG_LAST_WAIT` once it is stopped: :func:`owner_recorded`.

Adding a tag replaces the run's whole tag list (the Prefect API has no "add a tag"), so
the list is read first, unless this process knows it from at most
:data:`OWNER_TAGS_KNOWN_SECONDS` ago: as the engine read it when the run started, or as
this process last wrote it (only in the run's own process, when its tasks run there too).
A tag someone else (the UI, a script) adds to the run within that window is then
replaced by the owner tags' write, and one removed comes back; the owner tags themselves
are never lost that way.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from uuid import UUID

import anyio
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.logging import get_logger
from prefect.task_runners import ThreadPoolTaskRunner

from arr_prefect.client import ArrClient
from arr_prefect.credentials import RemoteRenderingCredentials, credentials_name_of
from arr_prefect.flows.api_calls import chosen_session_id
from arr_prefect.flows.events import emit_session_event, session_payload
from arr_prefect.flows.report import SessionReport
from arr_prefect.models import SessionSize
from arr_prefect.tasks.sessions import run_logger

__all__ = [
    "CREDENTIALS_TAG_PREFIX",
    "OWNER_TAG_PREFIX",
    "OwnerRecord",
    "TagsAhead",
    "credentials_blocks_of",
    "owned_session_ids",
    "owner_recorded",
    "owner_tags_ahead",
    "record_session_owner",
]

OWNER_TAG_PREFIX = "arr-session:"
"""Flow runs that own a session carry the tag ``arr-session:<session id>``."""

CREDENTIALS_TAG_PREFIX = "arr-credentials:"
"""Flow runs that made a session with a saved credentials block carry the tag
``arr-credentials:<block name>``: how hooks in another process find the account."""

# When the owner tags could not be written (the Prefect API away: a server restart, its
# database down), they are written again this often while the session lives.
OWNER_TAG_RETRY_SECONDS = 5.0
# ... and, once the session is stopped, waited for at most this long before giving up.
OWNER_TAG_LAST_WAIT = 60.0
# A flow run's tags as this process knew them this recently (read by the engine when the
# run started, or written here) are added to without being read again.
OWNER_TAGS_KNOWN_SECONDS = 2.0
# A session the service named (v1) is recorded after its create, shielded from a cancel
# for at most this long: the stop that follows must not wait on the Prefect API forever.
RECORD_AFTER_CREATE_SECONDS = 30.0

_owned: dict[str, set[str]] = {}
# The credentials each session of this process was made with, for hooks running here
# (an unsaved block has no name another process could load).
_credentials_of: dict[str, RemoteRenderingCredentials] = {}


def credentials_made_with(session_id: str) -> RemoteRenderingCredentials | None:
    """The credentials this process made ``session_id`` with (None: not made here)."""
    return _credentials_of.get(session_id)


class _TagWriter:
    """Adds tags to one flow run, in batches: all the tags asked for while a write is in
    flight go together in the next one (one update of the run's tags, read first unless
    known: :func:`_known_tags`).

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
                await self._update(list(tags))
            except Exception as exc:  # noqa: BLE001 - handed to every waiter of the batch
                if not batch.done():
                    batch.set_exception(exc)
                    batch.exception()  # retrieved here too: a cancelled waiter may not
            else:
                if not batch.done():
                    batch.set_result(None)

    async def _update(self, tags: list[str]) -> None:
        """One write: the run's tags (known, or read), plus those of ``tags`` missing."""
        key = str(self.flow_run_id)
        async with get_client() as prefect:
            current = _known_tags(key)
            if current is None:
                read_at = time.monotonic()
                current = list((await prefect.read_flow_run(self.flow_run_id)).tags)
                _know_tags(key, current, read_at)
            missing = [t for t in tags if t not in current]
            if not missing:
                return
            # Unknown while the update is in flight, and after it if it fails.
            _know_tags(key, None)
            sent_at = time.monotonic()
            await prefect.update_flow_run(self.flow_run_id, tags=[*current, *missing])
            _know_tags(key, [*current, *missing], sent_at)


# Each flow run's tags as this process last knew them (read or written, and when, by
# time.monotonic), for every event loop of the process; None: not known (a write in
# flight, or one that failed), read them first.
_tags_known: dict[str, tuple[list[str], float] | None] = {}
# Above this many runs, those whose tags are known from too long ago are forgotten.
_TAGS_KNOWN_MAX = 256


def _known_tags(flow_run_id: str) -> list[str] | None:
    """The run's tags if this process knows them from at most
    :data:`OWNER_TAGS_KNOWN_SECONDS` ago (None: they must be read): as it last read or
    wrote them, or as the engine read them when the run started, whichever is newer.

    Only within the run, and when every tag write of the run is made in this process:
    its tasks run here (Prefect's default thread-pool task runner). A task runner that
    runs tasks in other processes (Dask, Ray) may write tags there, unknown here.
    """
    engine_read = _engine_read(flow_run_id)
    if engine_read is None:
        return None
    if flow_run_id in _tags_known and _tags_known[flow_run_id] is None:
        return None
    newest = max(
        (k for k in (_tags_known.get(flow_run_id), engine_read) if k is not None),
        key=lambda known: known[1],
    )
    if time.monotonic() - newest[1] > OWNER_TAGS_KNOWN_SECONDS:
        return None
    return list(newest[0])


def _engine_read(flow_run_id: str) -> tuple[list[str], float] | None:
    """The run's tags as the engine read them when this attempt of the run started, and
    when (it enters the run context just after): when this code runs in the run and the
    run's tasks run in this process (None otherwise)."""
    context = FlowRunContext.get()
    if (
        context is None
        or context.flow_run is None
        or str(context.flow_run.id) != flow_run_id
        or not isinstance(context.task_runner, ThreadPoolTaskRunner)
    ):
        return None
    age = max(0.0, time.time() - context.start_time.timestamp())
    return list(context.flow_run.tags), time.monotonic() - age


def _know_tags(flow_run_id: str, tags: list[str] | None, at: float = 0.0) -> None:
    """Remember the run's tags as of ``at`` (None: not known until read again)."""
    _tags_known[flow_run_id] = None if tags is None else (tags, at)
    if len(_tags_known) > _TAGS_KNOWN_MAX:
        # Forgetting what is too old to be used changes nothing; what is unknown stays so.
        now = time.monotonic()
        for key, known in list(_tags_known.items()):
            if known is not None and now - known[1] > OWNER_TAGS_KNOWN_SECONDS:
                del _tags_known[key]


_tag_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _TagWriter]] = (
    weakref.WeakKeyDictionary()
)


def current_flow_run_id() -> str | None:
    """The ID of the flow run this code runs in (None outside one)."""
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
    price_per_hour: float | None = None,
    currency: str | None = None,
) -> bool:
    """Tie a session to a flow run (the current one by default), before anything can fail.

    Records it in this process, as the flow-run tag ``arr-session:<id>`` and as an
    ``arr.session.created`` event, so :func:`stop_owned_sessions` (in any process) and the
    orphan reaper can find it. Call it right after ``create_session`` when composing the
    tasks by hand; :func:`rendering_session` does it for you. Pass the ``credentials``
    the session was made with: a saved block's name is tagged too
    (``arr-credentials:<name>``) so hooks in another process reach the same account.

    Args:
        session_id: The session to record.
        flow_run_id: The flow run that owns it; the current one when None (outside a flow
            run only the event is sent).
        api_version: The API version the session was made with, for the event.
        credentials: The credentials the session was made with.
        size: The session's size, for the event.
        lease_seconds: The session's (rolling) lease, for the event.
        price_per_hour: The size's configured price, for the event's cost (0 so far).
        currency: That price's currency.

    Returns:
        False when the tags could not be written (``rendering_session`` then keeps trying
        while the session lives); True otherwise.
    """
    flow_run_id = flow_run_id if flow_run_id is not None else current_flow_run_id()
    tagged = True  # outside a flow run there is no run to tag, only the event to send
    if flow_run_id is not None:
        tagged = await _tag_owner(session_id, flow_run_id, credentials)
    _emit_created(
        session_id,
        flow_run_id,
        api_version=api_version,
        credentials=credentials,
        size=size,
        lease_seconds=lease_seconds,
        price_per_hour=price_per_hour,
        currency=currency,
    )
    return tagged


def _emit_created(
    session_id: str,
    flow_run_id: str | None,
    *,
    api_version: str | None,
    credentials: RemoteRenderingCredentials | None,
    size: str | None,
    lease_seconds: float | None,
    price_per_hour: float | None,
    currency: str | None,
) -> None:
    """``arr.session.created``: the event side of :func:`record_session_owner`."""
    block = credentials.block_name if credentials is not None else None
    emit_session_event(
        "arr.session.created",
        session_id,
        flow_run_id,
        session_payload(
            session_id,
            size=size,
            api_version=api_version,
            elapsed_seconds=0.0,
            price_per_hour=price_per_hour,
            currency=currency,
            lease_seconds=lease_seconds,
            credentials_block=block or "",
        ),
    )


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
    """Session IDs a flow run owns: recorded in this process, or as tags on the run.

    Args:
        flow_run_id: The flow run.

    Returns:
        The IDs recorded by this process or tagged on the run (only the former when the
        Prefect API cannot be reached).
    """
    key = str(flow_run_id)
    ids = set(_owned.get(key, ()))
    tags = await _run_tags(key)
    ids.update(t[len(OWNER_TAG_PREFIX) :] for t in tags if t.startswith(OWNER_TAG_PREFIX))
    return ids


async def credentials_blocks_of(flow_run: FlowRun) -> list[str]:
    """Names of the saved credentials blocks a flow run made sessions with.

    Args:
        flow_run: The flow run.

    Returns:
        Its ``arr-credentials:`` tags, then the block its ``credentials`` parameter
        references (render-batch's) or its deprecated ``credentials_block`` names, if
        another.
    """
    tags = await _run_tags(str(flow_run.id))
    names = [t[len(CREDENTIALS_TAG_PREFIX) :] for t in tags if t.startswith(CREDENTIALS_TAG_PREFIX)]
    parameters = flow_run.parameters or {}
    for value in (parameters.get("credentials"), parameters.get("credentials_block")):
        if (name := await credentials_name_of(value)) and name not in names:
            names.append(name)
    return names


class OwnerRecord:
    """The ownership record of one session of ``rendering_session`` (see
    :func:`owner_recorded`)."""

    def __init__(
        self,
        arr: ArrClient,
        flow_run_id: str | None,
        session_id: str | None,
        *,
        credentials: RemoteRenderingCredentials | None,
        size: SessionSize,
        lease: timedelta,
    ) -> None:
        self.arr = arr
        self.flow_run_id = flow_run_id
        self.session_id = session_id
        """The ID the client chose, recorded before the create; None: the service names it."""
        self.credentials = credentials
        self.size = size
        self.lease = lease
        self.tagged = True
        self._retry: asyncio.Task[None] | None = None

    async def record(self, session_id: str, *, tagged: bool | None = None) -> bool:
        """Record ``session_id`` as the flow run's (False: its tags are not written yet).

        ``tagged``: the outcome of a tag write made ahead (:func:`owner_tags_ahead`); only
        the ``arr.session.created`` event is then left to send."""
        if tagged is None:
            tagged = self.flow_run_id is None or await _tag_owner(
                session_id, self.flow_run_id, self.credentials
            )
        _emit_created(
            session_id,
            self.flow_run_id,
            api_version=self.arr.api_version,
            credentials=self.credentials,
            size=self.size.value,
            lease_seconds=self.lease.total_seconds(),
            price_per_hour=self.arr.settings.price_per_hour(self.size.value),
            currency=self.arr.settings.price_currency,
        )
        return tagged

    async def record_created(self, session_id: str) -> None:
        """The create answered: record a session the service named, and keep writing tags
        that could not be written yet while the session lives."""
        if self.session_id is None:
            # Inside teardown's reach: a cancel arriving while the tag is written still
            # stops the session (the shield only bounds how long the write may take).
            self.tagged = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(RECORD_AFTER_CREATE_SECONDS):
                self.tagged = await self.record(session_id)
        if not self.tagged and self.flow_run_id is not None:
            block = self.credentials.block_name if self.credentials is not None else None
            self._retry = asyncio.get_running_loop().create_task(
                _tag_until_recorded(self.flow_run_id, _owner_tags(session_id, block)),
                name=f"owner-tags-{session_id}",
            )

    def forget(self, session_id: str) -> None:
        """The session is stopped: this process no longer needs its credentials."""
        _credentials_of.pop(session_id, None)

    async def last_chance(self) -> None:
        """The session is down; its ownership record outlives it: a last chance for a tag
        the Prefect API could not take yet."""
        retry, self._retry = self._retry, None
        if retry is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(OWNER_TAG_LAST_WAIT):
            await asyncio.wait([retry])
        retry.cancel()


class TagsAhead:
    """The ID the client chose for the next session, and the write of the flow run's
    owner tags for it, started ahead (see :func:`owner_tags_ahead`)."""

    def __init__(self, session_id: str | None, writing: asyncio.Task[bool] | None) -> None:
        self.session_id = session_id
        """None: the service names the session (v1), nothing was written ahead."""
        self.taken = False
        """True once :func:`owner_recorded` has the outcome of the write."""
        self._writing = writing

    async def written(self) -> bool:
        """Wait for the tag write: False when the tags could not be written (yet)."""
        tagged = True if self._writing is None else await self._writing
        self.taken = True
        return tagged


@asynccontextmanager
async def owner_tags_ahead(
    arr: ArrClient, flow_run_id: str | None, credentials: RemoteRenderingCredentials | None
) -> AsyncIterator[TagsAhead]:
    """Choose the next session's ID (when the client names it) and start writing the run's
    owner tags for it at once, while the account's quota slot is sought.

    The tags are still written before the create is sent (:func:`owner_recorded` waits
    for them); they are no longer waited for before the slot. Sessions of one run
    starting together thus write their tags in one batch instead of one batch per group
    let through by the slot requests (200 sessions holding slots of a limit: about 50
    reads and updates of the run, one after the other, on each session's way to its
    create). A session that then never gets its slot leaves a tag naming an ID that was
    never created, as a failed create does: the hooks find it absent and the reaper works
    from the service's own list.

    Args:
        arr: The session's client (its API version says whether the client names it).
        flow_run_id: The flow run that owns the session (None outside one: no tags).
        credentials: The credentials the session is made with, recorded for the hooks.

    Yields:
        The chosen ID and the write in flight, for :func:`owner_recorded`.
    """
    chosen = chosen_session_id(arr, flow_run_id)
    writing: asyncio.Task[bool] | None = None
    if chosen is not None and flow_run_id is not None:
        writing = asyncio.get_running_loop().create_task(
            _tag_owner(chosen, flow_run_id, credentials), name=f"owner-tags-{chosen}"
        )
    ahead = TagsAhead(chosen, writing)
    try:
        yield ahead
    finally:
        if not ahead.taken and chosen is not None:
            # Never created (the slot wait ended the block): its credentials are not
            # needed; a write still in flight finishes on its own (the writer's batch is
            # shielded), only its waiter goes.
            _credentials_of.pop(chosen, None)
            if writing is not None:
                writing.cancel()


@asynccontextmanager
async def owner_recorded(
    arr: ArrClient,
    flow_run_id: str | None,
    report: SessionReport,
    credentials: RemoteRenderingCredentials | None,
    *,
    size: SessionSize,
    lease: timedelta,
    ahead: TagsAhead | None = None,
) -> AsyncIterator[OwnerRecord]:
    """The session is recorded as the flow run's before anything can fail.

    When the client names the session (2021-01-01), the ID is chosen and recorded here,
    before the create is even sent; a session the service names (v1) is recorded by
    :meth:`OwnerRecord.record_created` as soon as its create answers. Tags that could not
    be written are retried while the session lives, and once more on the way out.

    Args:
        arr: The session's client.
        flow_run_id: The flow run that owns the session (None outside one).
        report: The session's report (its ``session_id`` is set to a chosen ID).
        credentials: The credentials the session is made with (None: a client or the
            ``ARR_*`` settings), recorded for the hooks.
        size: The session's size, for the ``arr.session.created`` event.
        lease: The rolling lease, for that event.
        ahead: The ID chosen, and its tags being written, by :func:`owner_tags_ahead`
            (None: chosen and written here).

    Yields:
        The session's :class:`OwnerRecord`.
    """
    chosen = ahead.session_id if ahead is not None else chosen_session_id(arr, flow_run_id)
    record = OwnerRecord(arr, flow_run_id, chosen, credentials=credentials, size=size, lease=lease)
    if chosen is not None:
        report.session_id = chosen
        if ahead is not None:
            record.tagged = await record.record(chosen, tagged=await ahead.written())
        else:
            record.tagged = await record.record(chosen)
    try:
        yield record
    finally:
        await record.last_chance()
