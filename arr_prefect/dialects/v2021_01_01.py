"""The successor API, "2021-01-01": ARR_API.md §4.

API facts this module relies on:

- Paths are ``/accounts/{accountId}/sessions/{sessionId}`` with ``?api-version=2021-01-01``;
  stop is ``POST .../{sessionId}/:stop``; lists are paged by ``@nextLink``.
- The client chooses the session ID, and create is a ``PUT`` of it: retrying is safe (200
  when the same ID already exists with the same settings, 409 with other settings).
- Leases and elapsed time are whole minutes (``maxLeaseTimeMinutes``,
  ``elapsedTimeMinutes``, the latter rounded down); sizes are ``Standard``/``Premium``.
- ``PATCH`` answers 422 when the new lease is not greater than the current one, and 200
  with the session's properties otherwise.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from pydantic_core import core_schema

from arr_prefect.dialects.base import (
    HOSTNAME,
    OPTIONAL_FLOAT,
    OPTIONAL_INT,
    OPTIONAL_STR,
    SIZE,
    STATUS,
    STR,
    Dialect,
    SessionCalls,
    WireField,
    exact_else,
    memoized,
    none_if_empty,
    wire_field,
)
from arr_prefect.errors import LeaseNotExtendedError, SessionConflictError
from arr_prefect.models import Session, SessionSize, lease_minutes, validate_session_id

__all__ = ["V2021_01_01", "new_session_id"]

logger = logging.getLogger("arr_prefect.client")

API_VERSION = "2021-01-01"


def new_session_id(prefix: str = "arr") -> str:
    """A fresh 2021-01-01 session ID: ``{prefix}-{uuid4}`` (letters, digits and ``-``).

    Args:
        prefix: What the ID starts with (``rendering_session`` uses ``pf-<flow run id>``,
            so the ID alone names its owner).

    Returns:
        The ID, checked against the API's rules.

    Raises:
        InvalidSessionIdError: The prefix makes an ID the API would refuse.
    """
    return validate_session_id(f"{prefix}-{uuid.uuid4()}")


def minutes(value: float) -> timedelta:
    """A number of minutes as a duration (a ValueError beyond what a duration holds)."""
    try:
        return timedelta(minutes=value)
    except OverflowError:
        raise ValueError(f"{value!r} minutes is beyond any lease") from None


# A list repeats the same few leases and elapsed minutes: each value is converted once.
# Strict: a number (an int reads as a float), never a string or a boolean; finite.
MINUTES = core_schema.nullable_schema(
    memoized(core_schema.float_schema(strict=True, allow_inf_nan=False), minutes)
)
CREATION_TIME = core_schema.nullable_schema(
    exact_else(core_schema.datetime_schema(), none_if_empty)
)


class V2021_01_01(Dialect):
    """The 2021-01-01 API: client-chosen IDs, minute leases, safe retried creates."""

    api_version: ClassVar[str] = API_VERSION
    client_chooses_session_id: ClassVar[bool] = True
    # Elapsed minutes are rounded down: up to a minute more may have passed.
    elapsed_rounding: ClassVar[timedelta] = timedelta(minutes=1)
    query: ClassVar[Mapping[str, str] | None] = {"api-version": API_VERSION}
    wire_fields: ClassVar[Mapping[str, WireField]] = {
        "id": wire_field("id", STR, required=True),
        "status": wire_field("status", STATUS, required=True),
        "size": wire_field("size", SIZE),
        "hostname": wire_field("hostname", HOSTNAME),
        "handshake_port": wire_field("handshakePort", OPTIONAL_INT),
        "arr_inspector_port": wire_field("arrInspectorPort", OPTIONAL_INT),
        "max_lease": wire_field("maxLeaseTimeMinutes", MINUTES),
        "elapsed": wire_field("elapsedTimeMinutes", MINUTES),
        "created_at": wire_field("creationTime", CREATION_TIME),
        "teraflops": wire_field("teraflops", OPTIONAL_FLOAT),
        # ``error`` is an object, null or absent; its code and message are the session's.
        "message": wire_field([["error", "message"]], OPTIONAL_STR),
        "error_code": wire_field([["error", "code"]], OPTIONAL_STR),
    }

    def stop_request(self, session_id: str) -> tuple[str, tuple[str, ...]]:
        return "POST", (session_id, ":stop")

    def size_on_wire(self, size: SessionSize) -> str:
        return size.value

    async def create(
        self,
        calls: SessionCalls,
        *,
        lease: timedelta,
        size: SessionSize,
        models: Sequence[str],
        session_id: str | None,
    ) -> Session:
        sid = validate_session_id(session_id) if session_id is not None else new_session_id()
        body: dict[str, Any] = {
            "maxLeaseTimeMinutes": lease_minutes(lease),
            "size": self.size_on_wire(size),
        }
        if models:
            body["models"] = list(models)
        retried = False

        def note_retry() -> None:
            nonlocal retried
            retried = True

        try:
            response = await calls.call(
                "create session",
                "PUT",
                calls.sessions_url(sid),
                expect=(200, 201),
                json=body,
                on_retry=note_retry,
            )
        except SessionConflictError:
            # A retried PUT is answered 200 while the session its lost first attempt made is
            # active, but 409 once that session has ended (e.g. at once, for lack of
            # capacity). Then the conflicting session is our own: return it, so the caller
            # learns its fate (Error and the service's message) and can account for it.
            if not retried:
                raise
            existing = await calls.get_session(sid)
            if existing.size != size or existing.max_lease != timedelta(
                minutes=lease_minutes(lease)
            ):
                raise
            logger.warning(
                "create session: adopted session %s made by an attempt whose answer was lost"
                " (now %s)",
                sid,
                existing.status,
            )
            return existing
        return calls.session_in("create session", response)

    async def extend(self, calls: SessionCalls, session_id: str, lease: timedelta) -> Session:
        try:
            response = await calls.call(
                "extend session",
                "PATCH",
                calls.sessions_url(session_id),
                expect=(200,),
                json={"maxLeaseTimeMinutes": lease_minutes(lease)},
            )
        except LeaseNotExtendedError:
            # A retried PATCH whose first attempt was applied is answered 422: fine if the
            # lease is now exactly what was asked. Asking for less than the current lease
            # stays an error: the service cannot shorten a lease.
            current = await calls.get_session(session_id)
            if current.max_lease == timedelta(minutes=lease_minutes(lease)):
                return current
            raise
        return calls.remember(calls.session_in("extend session", response))
