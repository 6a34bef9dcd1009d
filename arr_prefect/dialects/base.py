"""The interface every API version implements, and what a dialect may ask of the client.

A :class:`Dialect` knows one API version's wire: its paths, its request bodies, how its
answers read into :class:`~arr_prefect.models.Session`, and the create and extend steps
that differ between versions. :class:`SessionCalls` is the other side of the cut: the
little a dialect may ask of :class:`~arr_prefect.client.ArrClient` (send with the client's
retries, read errors, look sessions up). The client holds one dialect and never compares
version strings; a new version is a new module and one line in the registry
(:data:`arr_prefect.dialects.DIALECTS`).

Parsing is one pydantic call per answer: a list page of 1,000 sessions is validated by
one :class:`pydantic_core.SchemaValidator` that reads each item's wire names (a typed
dict with aliases, fast lookups for statuses and sizes, cached TimeSpans) and chains it
into the :class:`Session` model's own validation.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Protocol
from urllib.parse import quote

import httpx
from pydantic_core import SchemaValidator, core_schema

from arr_prefect.clock import Clock
from arr_prefect.errors import ArrHTTPError
from arr_prefect.models import Session, SessionSize, SessionStatus

__all__ = [
    "HOSTNAME",
    "OPTIONAL_FLOAT",
    "OPTIONAL_INT",
    "OPTIONAL_STR",
    "SIZE",
    "STATUS",
    "STR",
    "AmbiguousOutcome",
    "Dialect",
    "SessionCalls",
    "WireField",
    "exact_else",
    "function",
    "none_if_empty",
    "size_from_wire",
    "status_from_wire",
    "wire_field",
]

WireField = core_schema.TypedDictField
"""One :class:`Session` field as a dialect reads it: its wire name and its validation."""


class AmbiguousOutcome(Exception):
    """A non-idempotent request may or may not have been carried out."""

    def __init__(self, reason: str, *, may_still_happen: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # A timed-out request may still be carried out after we look for its effect.
        self.may_still_happen = may_still_happen


class SessionCalls(Protocol):
    """What a dialect may ask of the client it serves (the client's side of the cut)."""

    @property
    def clock(self) -> Clock:
        """The client's clock (back-off sleeps, the age of what it last saw)."""

    def sessions_url(self, *parts: str) -> str:
        """The absolute URL of ``sessions/{parts...}`` in this dialect's paths."""

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
        """Send with the client's retries; the final response, error statuses included.

        Raises :class:`AmbiguousOutcome` for a non-idempotent request whose fate is unknown.
        """

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
        """Send, and raise the matching :class:`ArrHTTPError` unless the status is expected."""

    def error(self, operation: str, response: httpx.Response) -> ArrHTTPError:
        """The exception an unwanted answer stands for."""

    def session_in(self, operation: str, response: httpx.Response) -> Session:
        """The session in a success answer (an unreadable one is an ArrHTTPError)."""

    def remember(self, session: Session) -> Session:
        """Note ``session`` as the latest known state of its ID; return it."""

    def last_seen(self, session_id: str) -> tuple[Session, float] | None:
        """The session as the client last saw it, and when (clock time); None if never."""

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before look ``attempt + 1`` (capped, jittered)."""

    def random_below(self, limit: int) -> int:
        """A random integer in ``[1, limit)`` from the client's generator."""

    async def get_session(self, session_id: str) -> Session:
        """The session's current properties."""

    async def list_sessions(self) -> list[Session]:
        """Every active session of the account."""

    async def stop_session(self, session_id: str) -> bool:
        """Stop a session (idempotent)."""


# ------------------------------------------------------------------ fast field readers


def status_from_wire(value: Any) -> SessionStatus:
    """A status as any version spells it (exact spellings by one dict lookup)."""
    return SessionStatus.parse(value)


def size_from_wire(value: Any) -> SessionSize | None:
    """A size as any version spells it; empty or absent is None."""
    return SessionSize.parse(value) if value else None


def none_if_empty(value: Any) -> Any:
    """``""`` (v1's hostname before Ready) reads as None."""
    return value or None


def wire_field(
    alias: str | list[list[str | int]],
    schema: core_schema.CoreSchema,
    *,
    required: bool = False,
) -> WireField:
    """A :class:`Session` field read from the wire name ``alias`` (or an alias path).

    Optional fields default to None, as the model's do.
    """
    if not required:
        schema = core_schema.with_default_schema(schema, default=None)
    return core_schema.typed_dict_field(schema, required=required, validation_alias=alias)


def function(read: Callable[[Any], Any]) -> core_schema.CoreSchema:
    """A field read by a plain function (its ValueError is a validation error)."""
    return core_schema.no_info_plain_validator_function(read)


def exact_else(exact: core_schema.CoreSchema, read: Callable[[Any], Any]) -> core_schema.CoreSchema:
    """``exact`` (checked without calling Python), else the function ``read``.

    A list of 1,000 sessions would otherwise make thousands of Python calls for values
    the service almost always spells exactly.
    """
    return core_schema.union_schema([exact, function(read)], mode="left_to_right")


STR = core_schema.str_schema()
OPTIONAL_STR = core_schema.nullable_schema(STR)
OPTIONAL_INT = core_schema.nullable_schema(core_schema.int_schema())
OPTIONAL_FLOAT = core_schema.nullable_schema(core_schema.float_schema())
STATUS = exact_else(
    core_schema.enum_schema(SessionStatus, list(SessionStatus), sub_type="str"), status_from_wire
)
SIZE = core_schema.nullable_schema(
    exact_else(
        core_schema.enum_schema(SessionSize, list(SessionSize), sub_type="str"), size_from_wire
    )
)
HOSTNAME = core_schema.nullable_schema(
    exact_else(core_schema.str_schema(min_length=1), none_if_empty)
)


def _validators(fields: Mapping[str, WireField]) -> tuple[SchemaValidator, SchemaValidator]:
    """One validator for a session answer and one for a list page, from the wire fields."""
    unknown = set(fields) - set(Session.model_fields)
    if unknown:
        raise TypeError(f"wire fields that are not Session fields: {sorted(unknown)}")
    # The wire names become Session's field names, then Session validates as it always does.
    session = core_schema.chain_schema(
        [core_schema.typed_dict_schema(dict(fields)), Session.__pydantic_core_schema__]
    )
    page = core_schema.typed_dict_schema(
        {
            "sessions": wire_field(
                "sessions", core_schema.nullable_schema(core_schema.list_schema(session))
            ),
            "next_link": wire_field("@nextLink", OPTIONAL_STR),
        }
    )
    return SchemaValidator(session), SchemaValidator(page)


# ------------------------------------------------------------------ the interface


class Dialect(ABC):
    """One API version: paths, bodies, parsing, and the create/extend steps that differ.

    Subclasses set the class attributes and :attr:`wire_fields`, and implement
    :meth:`create` and :meth:`extend`. Flows and the CLI ask a client's dialect
    (``arr.dialect.client_chooses_session_id``) instead of comparing version strings.
    """

    api_version: ClassVar[str]
    """The version's name, as settings spell it (``ARR_API_VERSION``)."""

    client_chooses_session_id: ClassVar[bool]
    """True when create takes the caller's session ID (and a retried create is safe);
    False when the service chooses it (a lost create must be reconciled)."""

    elapsed_rounding: ClassVar[timedelta] = timedelta(0)
    """How much less than the truth the reported elapsed time can be (it is rounded down):
    what :meth:`~arr_prefect.client.ArrClient.extend_session_by` adds to never cut short."""

    path_prefix: ClassVar[str] = ""
    """What comes before ``/accounts/{accountId}/sessions`` in every session path."""

    query: ClassVar[Mapping[str, str] | None] = None
    """Query parameters every session request carries (the client writes them into each
    URL once, rather than have httpx merge params into every request)."""

    wire_fields: ClassVar[Mapping[str, WireField]]
    """Session field name -> how this version's properties carry it."""

    def __init__(self) -> None:
        self._session_validator, self._page_validator = _validators(self.wire_fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_version={self.api_version!r})"

    # -------------------------------------------------------------- requests

    def sessions_path(self, account_id: str, *parts: str) -> str:
        """``{prefix}/accounts/{accountId}/sessions/{parts...}``, each part quoted."""
        account = quote(account_id, safe="")
        tail = "".join(f"/{quote(p, safe=':')}" for p in parts)
        return f"{self.path_prefix}/accounts/{account}/sessions{tail}"

    def properties_parts(self, session_id: str) -> tuple[str, ...]:
        """The path parts (after ``sessions``) of a session's properties."""
        return (session_id,)

    @abstractmethod
    def stop_request(self, session_id: str) -> tuple[str, tuple[str, ...]]:
        """The method and path parts (after ``sessions``) that stop a session."""

    # -------------------------------------------------------------- answers

    def parse_session(self, content: bytes | str) -> Session:
        """A session from a properties answer's body (a ValueError when unreadable)."""
        result: Session = self._session_validator.validate_python(json.loads(content))
        return result

    def parse_page(self, content: bytes | str) -> tuple[list[Session], str | None]:
        """The sessions of a list answer and its ``@nextLink`` (None on the last page).

        One validation for the whole page; a ValueError when it cannot be read.
        """
        page = self._page_validator.validate_python(json.loads(content))
        return page["sessions"] or [], page["next_link"]

    # -------------------------------------------------------------- steps that differ

    @abstractmethod
    def size_on_wire(self, size: SessionSize) -> str:
        """How this version spells a size in a request."""

    @abstractmethod
    async def create(
        self,
        calls: SessionCalls,
        *,
        lease: timedelta,
        size: SessionSize,
        models: Sequence[str],
        session_id: str | None,
    ) -> Session:
        """Create a session; return it as soon as its ID is known (see ArrClient)."""

    @abstractmethod
    async def extend(self, calls: SessionCalls, session_id: str, lease: timedelta) -> Session:
        """Set the session's total lease; return the session after the change."""
