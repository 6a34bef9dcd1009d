"""The seed's API, "v1" (2019-2021): ARR_API.md §3.

API facts this module relies on:

- Paths are ``/v1/accounts/{accountId}/sessions/...``; properties live at
  ``.../{sessionId}/properties``; stop is ``DELETE .../{sessionId}``.
- Leases are .NET TimeSpan strings (``"4:0:0"``), always the **total** since start;
  sizes are sent lower-case (``"standard"``); properties are ``session*`` camelCase.
- The service chooses the session ID, and ``POST .../sessions/create`` is **not
  idempotent**: a retry after a lost answer can create a second, billed session. So a
  create is never re-posted after an ambiguous failure: each attempt's lease carries a
  sub-second fingerprint, the session list is searched for it, and the session found is
  adopted; only a service that provably made nothing is posted to again. A caller may
  choose the fingerprint (:func:`fingerprinted_lease`): every attempt then carries it, and
  the caller can find the session too (the session guard does, if its process dies while
  the create is in flight).
- ``PATCH`` answers 200 with an empty body: the session after it is completed from what
  the client last saw, or read back with one GET.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import ClassVar

from pydantic_core import core_schema

from arr_prefect.dialects.base import (
    HOSTNAME,
    OPTIONAL_INT,
    OPTIONAL_STR,
    SIZE,
    STATUS,
    STR,
    AmbiguousOutcome,
    Dialect,
    SessionCalls,
    WireField,
    memoized,
    wire_field,
)
from arr_prefect.errors import ArrHTTPError, ArrTransportError, CreateOutcomeUnknownError
from arr_prefect.models import (
    MAX_LEASE,
    Session,
    SessionSize,
    SessionStatus,
    format_timespan,
    parse_timespan,
    validate_session_id,
)

__all__ = ["V1", "fingerprinted_lease"]

logger = logging.getLogger("arr_prefect.client")

# How many times a create is re-posted after the service provably did not make a session.
CREATE_ROUNDS = 3
# How many list calls a create reconciliation makes before concluding nothing was made.
RECONCILE_LISTS = 3
# A lease this close to the time already elapsed may end the session when sent (elapsed
# is reported in whole seconds and ages between the answer and the PATCH).
EXTEND_MARGIN = timedelta(seconds=60)


def timespan_or_none(value: str) -> timedelta | None:
    """A TimeSpan field's text as a duration; empty is None (TimeSpanFormatError if bad)."""
    return parse_timespan(value) if value else None


# A list repeats the same few leases and elapsed times: each spelling is parsed once.
TIMESPAN = core_schema.nullable_schema(memoized(core_schema.str_schema(), timespan_or_none))


class V1(Dialect):
    """The v1 API: service-chosen IDs, TimeSpan leases, lost-create reconciliation."""

    api_version: ClassVar[str] = "v1"
    client_chooses_session_id: ClassVar[bool] = False
    path_prefix: ClassVar[str] = "/v1"
    wire_fields: ClassVar[Mapping[str, WireField]] = {
        "id": wire_field("sessionId", STR, required=True),
        "status": wire_field("sessionStatus", STATUS, required=True),
        "size": wire_field("sessionSize", SIZE),
        "hostname": wire_field("sessionHostname", HOSTNAME),
        "handshake_port": wire_field("handshakePort", OPTIONAL_INT),
        "arr_inspector_port": wire_field("arrInspectorPort", OPTIONAL_INT),
        "max_lease": wire_field("sessionMaxLeaseTime", TIMESPAN),
        "elapsed": wire_field("sessionElapsedTime", TIMESPAN),
        "message": wire_field("message", OPTIONAL_STR),
    }

    def properties_parts(self, session_id: str) -> tuple[str, ...]:
        return (session_id, "properties")

    def stop_request(self, session_id: str) -> tuple[str, tuple[str, ...]]:
        return "DELETE", (session_id,)

    def size_on_wire(self, size: SessionSize) -> str:
        return size.value.lower()

    # -------------------------------------------------------------- create

    async def create(
        self,
        calls: SessionCalls,
        *,
        lease: timedelta,
        size: SessionSize,
        models: Sequence[str],
        session_id: str | None,
    ) -> Session:
        if session_id is not None:
            raise ValueError("v1 chooses session IDs itself: do not pass session_id")
        url = calls.sessions_url("create")
        attempt_lease = lease
        for _ in range(CREATE_ROUNDS):
            attempt_lease = self._fingerprinted(calls, lease)
            body = {
                "maxLeaseTime": format_timespan(attempt_lease),
                "models": list(models),
                "size": self.size_on_wire(size),
            }
            try:
                response = await calls.send(
                    "create session", "POST", url, json=body, idempotent=False
                )
            except AmbiguousOutcome as ambiguous:
                logger.warning(
                    "create session: the answer was lost (%s); looking for the session it made",
                    ambiguous.reason,
                )
                found, certain = await self._find_created(calls, attempt_lease, size)
                if found is not None:
                    logger.warning(
                        "create session: adopted session %s made by the lost request", found.id
                    )
                    return found
                if certain and not ambiguous.may_still_happen:
                    continue  # the service provably made nothing: posting again is safe
                raise _outcome_unknown(
                    attempt_lease,
                    "the session list could not be read to check"
                    if not certain
                    else "the request timed out and may still be carried out",
                ) from None
            if response.status_code not in (200, 201, 202):
                raise calls.error("create session", response)
            try:
                sid = validate_session_id(str(response.json()["sessionId"]))
            except (ValueError, KeyError, TypeError):
                raise calls.error("create session (no sessionId in the answer)", response) from None
            return Session(
                id=sid, status=SessionStatus.STARTING, size=size, max_lease=attempt_lease
            )
        raise _outcome_unknown(
            attempt_lease, f"the answer was lost {CREATE_ROUNDS} times; not posting again"
        )

    @staticmethod
    def _fingerprinted(calls: SessionCalls, lease: timedelta) -> timedelta:
        """``lease`` with a fingerprint in its microseconds (harmless: under a second more),
        so that a lost create can be recognised in the session list. A lease that already
        carries one (the caller chose it: see :func:`fingerprinted_lease`) keeps it."""
        return fingerprinted_lease(lease, lease.microseconds or calls.random_below(1_000_000))

    @staticmethod
    async def _find_created(
        calls: SessionCalls, lease: timedelta, size: SessionSize
    ) -> tuple[Session | None, bool]:
        """Find the active session whose lease carries this attempt's fingerprint.

        Returns the session (or None) and whether every look succeeded: "not found" only
        proves nothing was made when the list could actually be read.
        """
        certain = True
        for attempt in range(1, RECONCILE_LISTS + 1):
            try:
                sessions = await calls.list_sessions()
            except (ArrHTTPError, ArrTransportError) as exc:
                logger.warning("create session: listing sessions to reconcile failed: %s", exc)
                certain = False
                sessions = []
            matches = [
                s for s in sessions if s.max_lease == lease and (s.size is None or s.size == size)
            ]
            if matches:
                adopted, *duplicates = matches
                for duplicate in duplicates:
                    logger.warning("create session: stopping duplicate session %s", duplicate.id)
                    await calls.stop_session(duplicate.id)
                return adopted, True
            if attempt < RECONCILE_LISTS:
                await calls.clock.sleep(calls.backoff(attempt))
        return None, certain

    # -------------------------------------------------------------- extend

    async def extend(self, calls: SessionCalls, session_id: str, lease: timedelta) -> Session:
        await calls.call(
            "extend session",
            "PATCH",
            calls.sessions_url(session_id),
            expect=(200, 204),
            json={"maxLeaseTime": format_timespan(lease)},
        )
        # The answer is empty. The session's state is known without asking again when the
        # client saw it Ready just before (extend_session_by and the lease keeper always
        # have); otherwise one GET reads it back.
        known = _after_extend(calls, session_id, lease)
        return known if known is not None else await calls.get_session(session_id)


def _after_extend(calls: SessionCalls, session_id: str, lease: timedelta) -> Session | None:
    """The session after a PATCH answered 200 (an empty body), or None if unknown.

    Known when the client last saw the session Ready and ``lease`` exceeds the time elapsed
    since (estimated from that answer, with a margin): the 200 says the session was active,
    a Ready session never goes back to Starting, and a lease longer than the elapsed time
    cannot have ended it. Otherwise only the service knows: a session last seen Starting
    may be Ready now with a hostname, and a lease not above the elapsed time ends the
    session as Expired.
    """
    seen = calls.last_seen(session_id)
    if seen is None:
        return None
    before, at = seen
    if before.status != SessionStatus.READY or before.elapsed is None:
        return None
    elapsed = before.elapsed + timedelta(seconds=max(0.0, calls.clock.time() - at))
    if lease <= elapsed + EXTEND_MARGIN:
        return None
    after = before.model_copy(
        update={"max_lease": lease, "elapsed": timedelta(seconds=int(elapsed.total_seconds()))}
    )
    return calls.remember(after)


def fingerprinted_lease(lease: timedelta, fingerprint: int) -> timedelta:
    """``lease`` with ``fingerprint`` (1 to 999,999) as its microseconds.

    What a v1 create is recognised by in the session list, where the service names the
    session: ``sessionMaxLeaseTime`` echoes the lease to the microsecond. A caller that
    passes such a lease to :meth:`V1.create` has every attempt of that create carry it, and
    can look for the session itself (the session guard does, when the process that sent
    the create dies before its answer). Under a second more than asked; a lease at the
    24-hour maximum is a second shorter instead.

    Args:
        lease: The lease asked for (its own microseconds are replaced).
        fingerprint: The microseconds to give it.

    Returns:
        The lease to send.

    Raises:
        ValueError: ``fingerprint`` is not between 1 and 999,999.
    """
    if not 0 < fingerprint < 1_000_000:
        raise ValueError(f"a lease fingerprint is 1 to 999999 microseconds, got {fingerprint!r}")
    attempt = (
        lease - timedelta(microseconds=lease.microseconds) + timedelta(microseconds=fingerprint)
    )
    if attempt > MAX_LEASE:
        attempt -= timedelta(seconds=1)
    return attempt


def _outcome_unknown(lease: timedelta, why: str) -> CreateOutcomeUnknownError:
    error = CreateOutcomeUnknownError(
        f"create session failed: the service's answer was lost and {why}. Not posting again,"
        " to avoid a duplicate billed session. If the request did make a session, it is the"
        f" one whose maxLeaseTime is {format_timespan(lease)}, and the service ends it when"
        " that lease runs out"
    )
    error.lease_fingerprint = format_timespan(lease)
    return error
