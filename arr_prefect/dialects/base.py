"""The interface every API version implements, and what a dialect may ask of the client.

A :class:`Dialect` knows one API version's wire: its paths, its request bodies, how its
answers read into :class:`~arr_prefect.models.Session`, and the create and extend steps
that differ between versions. :class:`SessionCalls` is the other side of the cut: the
little a dialect may ask of :class:`~arr_prefect.client.ArrClient` (send with the client's
retries, read errors, look sessions up). The client holds one dialect and never compares
version strings; a new version is a new module and one line in the registry
(:data:`arr_prefect.dialects.DIALECTS`).

Parsing is one pydantic call per answer, straight from the bytes: a list page of 1,000
sessions is read by one :class:`pydantic_core.SchemaValidator` (``validate_json``) whose
item schema is the :class:`Session` model itself with this version's wire names as
validation aliases. Each item becomes a ``Session`` in one pass, with no intermediate
dict and no second validation; values the service repeats (statuses, sizes, TimeSpans,
minutes) are read once per spelling and then found by a dict lookup made from C. A page
that cannot be read raises a ValueError naming the first item and field at fault.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Protocol
from urllib.parse import quote

import httpx
from pydantic_core import SchemaValidator, ValidationError, core_schema

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
    "memoized",
    "none_if_empty",
    "size_from_wire",
    "status_from_wire",
    "unreadable",
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


class _Memo(dict[Any, Any]):
    """Values already read, by their wire spelling; a miss reads and keeps the value.

    Looked up through the dict's own C ``__getitem__``, so a hit costs no Python frame.
    Bounded: past ``limit`` spellings (a misbehaving server) it starts afresh.
    """

    def __init__(self, read: Callable[[Any], Any], limit: int) -> None:
        super().__init__()
        self.read = read
        self.limit = limit

    def __missing__(self, key: Any) -> Any:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.read(key)
        return value


def memoized(
    accepts: core_schema.CoreSchema, read: Callable[[Any], Any], *, limit: int = 4096
) -> core_schema.CoreSchema:
    """A field whose values pass ``accepts``, then are read by ``read`` once per spelling.

    A list of 1,000 sessions repeats the same few leases and elapsed times: a plain
    function would be called twice per session, a dict lookup costs next to nothing.
    ``accepts`` must only let hashable values through (a string, a number); ``read``
    raises a ValueError for a value it cannot read.
    """
    return core_schema.chain_schema(
        [accepts, core_schema.no_info_plain_validator_function(_Memo(read, limit).__getitem__)],
        metadata={_MEMO_PARTS: (accepts, read, limit)},
    )


_MEMO_PARTS = "arr_prefect.memoized"
"""The key under which a :func:`memoized` schema keeps its parts (pydantic-core ignores a
schema's ``metadata``): :func:`_checked` rebuilds it to check each value once."""


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
# Statuses and sizes as either version spells them ("Ready", "starting", "standard"):
# each spelling is read once, then found by a dict lookup.
STATUS = memoized(STR, status_from_wire, limit=64)
SIZE = core_schema.nullable_schema(memoized(STR, size_from_wire, limit=64))
HOSTNAME = core_schema.nullable_schema(
    exact_else(core_schema.str_schema(min_length=1), none_if_empty)
)


def _field_schema(name: str) -> core_schema.CoreSchema:
    """The schema of :class:`Session`'s field ``name``, without its default."""
    # Read as plain dicts: pydantic's model schema layout (model > model-fields > field).
    schema: Any = Session.__pydantic_core_schema__
    if schema["type"] == "definitions":  # pragma: no cover - pydantic's own layout
        schema = schema["schema"]
    own: Any = schema["schema"]["fields"][name]["schema"]
    inner: core_schema.CoreSchema = own["schema"] if own["type"] == "default" else own
    return inner


def _ignored(value: Any) -> None:
    return None


# Readers whose schema is already the Session field's own (a str, an int, a float, or
# None): checking their value again against that field would only repeat the work.
_PLAIN_READERS = (STR, OPTIONAL_STR, OPTIONAL_INT, OPTIONAL_FLOAT)


def _session_schema(fields: Mapping[str, WireField]) -> core_schema.ModelSchema:
    """:class:`Session` read from one version's wire names, in one pass.

    Each value a wire field reads is checked against the Session field's own schema
    (see :func:`_checked`: once per spelling for a memoized reader), so a dialect's
    reader can never put a value of the wrong type into a Session. A field this version
    does not carry takes its default (a key of that name in an answer is ignored).

    The fields are read into a typed dict that becomes the Session's ``__dict__`` as it
    is, and every Session of this version shares one set of the fields the version
    carries as its ``model_fields_set`` (pydantic copies it before changing it, in
    ``model_copy``). pydantic's own model fields would build a set for each Session: a
    third object per Session for the garbage collector to trace, which made a list of
    1,000 sessions 10-20 % slower to read.
    """
    typed: dict[str, core_schema.TypedDictField] = {}
    for name in Session.model_fields:
        wire = fields.get(name)
        if wire is None:
            typed[name] = core_schema.typed_dict_field(
                core_schema.with_default_schema(function(_ignored), default=None),
                required=False,
            )
            continue
        schema: Any = wire["schema"]
        default = schema["type"] == "default"
        read: core_schema.CoreSchema = schema["schema"] if default else schema
        checked = _checked(read, name)
        if default:
            checked = core_schema.with_default_schema(checked, default=None)
        typed[name] = core_schema.typed_dict_field(
            checked,
            required=bool(wire.get("required", True)) and not default,
            validation_alias=wire.get("validation_alias"),
        )
    carried = set(fields)

    def as_model_fields(values: dict[str, Any]) -> tuple[dict[str, Any], None, set[str]]:
        return values, None, carried

    return core_schema.model_schema(
        Session,
        core_schema.chain_schema(
            [
                core_schema.typed_dict_schema(typed, total=False),
                core_schema.no_info_plain_validator_function(as_model_fields),
            ]
        ),
        config=core_schema.CoreConfig(title=Session.__name__),
    )


def _checked(read: core_schema.CoreSchema, name: str) -> core_schema.CoreSchema:
    """``read``, made to yield only values of :class:`Session`'s field ``name``.

    A plain reader (a str, an int...) already does. A :func:`memoized` reader (possibly
    nullable, for a field that takes None) is rebuilt so that each value it reads is
    checked once, when it is first read, not each time a session repeats its spelling:
    a list of 1,000 sessions makes thousands of such checks otherwise. Any other reader
    is followed by the field's own check.
    """
    if any(read is plain for plain in _PLAIN_READERS):
        return read
    field = _field_schema(name)
    nullable = read["type"] == "nullable"
    inner: Any = read["schema"] if nullable else read
    parts = (inner.get("metadata") or {}).get(_MEMO_PARTS)
    if parts is None or (nullable and field["type"] != "nullable"):
        return core_schema.chain_schema([read, field])
    accepts, reader, limit = parts
    check = SchemaValidator(field)

    def read_checked(value: Any) -> Any:
        try:
            return check.validate_python(reader(value))
        except ValidationError as wrong:
            raise ValueError(wrong.errors(include_url=False)[0]["msg"]) from None

    rebuilt = memoized(accepts, read_checked, limit=limit)
    return core_schema.nullable_schema(rebuilt) if nullable else rebuilt


def _chained_schema(fields: Mapping[str, WireField]) -> core_schema.CoreSchema:
    """The same in two passes (a typed dict of wire names, then Session's validation)."""
    return core_schema.chain_schema(
        [core_schema.typed_dict_schema(dict(fields)), Session.__pydantic_core_schema__]
    )


def _page_schema(session: core_schema.CoreSchema) -> core_schema.CoreSchema:
    return core_schema.typed_dict_schema(
        {
            "sessions": wire_field(
                "sessions", core_schema.nullable_schema(core_schema.list_schema(session))
            ),
            "next_link": wire_field("@nextLink", OPTIONAL_STR),
        }
    )


def _one_pass(schema: core_schema.CoreSchema) -> SchemaValidator | None:
    """A validator of ``schema`` that builds Sessions itself, or None if pydantic won't.

    pydantic-core validates a model schema of an already-built model class with that
    class's own validator (its field names, not our aliases) unless told not to
    (``_use_prebuilt=False``: in pydantic-core's own type stubs, from the floor's 2.46 to
    2.50 at least, and what pydantic passes when it rebuilds a model). Should that ever
    change, :func:`_reads_aliases` notices and the caller falls back to two passes:
    slower, never wrong.
    """
    try:
        validator = SchemaValidator(schema, _use_prebuilt=False)  # type: ignore[call-arg,unused-ignore]
    except TypeError:  # pragma: no cover - a pydantic-core without the keyword
        return None
    return validator


def _validators(
    fields: Mapping[str, WireField],
) -> tuple[SchemaValidator, SchemaValidator, bool]:
    """Validators for a session answer and a list page, and whether they read in one pass."""
    unknown = set(fields) - set(Session.model_fields)
    if unknown:
        raise TypeError(f"wire fields that are not Session fields: {sorted(unknown)}")
    one = _session_schema(fields)
    session, page = _one_pass(one), _one_pass(_page_schema(one))
    if session is not None and page is not None and _reads_aliases(session, fields):
        return session, page, True
    chained = _chained_schema(fields)  # pragma: no cover - see _one_pass
    return SchemaValidator(chained), SchemaValidator(_page_schema(chained)), False


def _reads_aliases(validator: SchemaValidator, fields: Mapping[str, WireField]) -> bool:
    """Whether ``validator`` reads this version's wire names (see :func:`_one_pass`).

    Sends a value no field accepts under each wire name that differs from its field's
    name: a validator reading wire names refuses them there; one reading field names
    (pydantic's prebuilt Session validator) does not look at them.
    """
    aliases = {
        alias
        for name, wire in fields.items()
        if isinstance(alias := wire.get("validation_alias"), str) and alias != name
    }
    if not aliases:
        return True  # nothing to tell apart
    try:
        validator.validate_python(dict.fromkeys(aliases, _Unreadable()))
    except ValidationError as error:
        return any(fault["loc"][:1] and fault["loc"][0] in aliases for fault in error.errors())
    except Exception:  # noqa: BLE001 - a dialect's reader choked on the probe: it was read
        return True
    return False


class _Unreadable:
    """A value no Session field accepts."""


def unreadable(error: ValidationError) -> ValueError:
    """A ValueError saying what in an answer could not be read: the first fault, where.

    A list of 1,000 with one bad item names that item (``sessions[412]``) and its field
    by the wire's names, and counts the others, instead of a thousand lines.
    """
    faults = error.errors(include_url=False, include_context=False, include_input=True)
    first = faults[0]
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    ).lstrip(".")
    value = repr(first.get("input"))
    if len(value) > 80:
        value = value[:77] + "..."
    message = first["msg"].removeprefix("Value error, ")  # our own readers' words
    what = f"{where}: {message}" if where else message
    if first["type"] not in ("missing", "json_invalid"):
        what += f" (got {value})"
    if len(faults) > 1:
        what += f"; and {len(faults) - 1} more"
    return ValueError(what)


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
        (
            self._session_validator,
            self._page_validator,
            self.reads_in_one_pass,
        ) = _validators(self.wire_fields)
        """True when answers become Sessions in one pass (False: two, on a pydantic-core
        that would not build our schema; slower, same results)."""

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
        try:
            result: Session = self._session_validator.validate_json(content)
        except ValidationError as error:
            raise unreadable(error) from None
        return result

    def parse_page(self, content: bytes | str) -> tuple[list[Session], str | None]:
        """The sessions of a list answer and its ``@nextLink`` (None on the last page).

        One validation for the whole page, from the bytes; a ValueError naming the first
        item and field at fault when it cannot be read.
        """
        try:
            page = self._page_validator.validate_json(content)
        except ValidationError as error:
            raise unreadable(error) from None
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
