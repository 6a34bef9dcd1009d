"""Reading a request: the limits a front end enforced, lenient JSON, the session fields.

Also the two things every route module builds on: :class:`Call` (one request being
handled, with the emulator it works on) and :class:`RouteSpec` (a named route).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from arr_prefect.clock import Clock
from arr_prefect.emulator.faults import FaultController
from arr_prefect.emulator.listing import Listings
from arr_prefect.emulator.state import ApiError, EmulatorState
from arr_prefect.errors import InvalidSizeError, TimeSpanFormatError
from arr_prefect.models import SessionSize, parse_timespan

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MODELS",
    "MAX_MODEL_CHARS",
    "Call",
    "ClientGone",
    "EmulatorCore",
    "Handler",
    "RouteSpec",
    "declared_length",
    "json_depth",
    "parse_lenient_json",
    "parse_minutes",
    "parse_size",
    "parse_v1_lease",
    "read_body",
    "route",
    "too_large",
]

MAX_BODY_BYTES = 64 * 1024
"""The largest request body taken (413 beyond). A session call's body is a few hundred
bytes; 64 KiB leaves room for long ``models`` lists and fault scripts, and keeps a hostile
client from making the emulator hold (and serve back) megabytes."""
MAX_MODELS = 64
MAX_MODEL_CHARS = 2048
"""v1 ``models`` are asset-container URLs, stored and served back by the ledger: at most
:data:`MAX_MODELS` of them, each no longer than a URL a front end passes (2 KiB), so no
stored field grows with what a client chooses to send (400 beyond)."""
MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a body may have (400 beyond). Nothing the
service takes nests more than three levels; refusing before parsing means no body can make
the parser (or a later ``json.dumps`` of it) recurse out of the stack."""


class EmulatorCore(Protocol):
    """What a route may use of the :class:`~arr_prefect.emulator.Emulator` it serves.

    A protocol, so that the routes need not import the facade that builds the app.
    Every touch of ``state`` happens under ``lock``.
    """

    @property
    def state(self) -> EmulatorState: ...
    @property
    def lock(self) -> AbstractContextManager[Any]: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def faults(self) -> FaultController: ...
    @property
    def page_size(self) -> int: ...
    @property
    def admin_token(self) -> str | None: ...
    def ledger(self) -> dict[str, Any]: ...
    def request_counts(self) -> dict[str, dict[str, int]]: ...
    def request_log_record(self, route: str, status: int | str) -> None: ...
    def expire_tokens(self) -> int: ...


_LENIENT_TOKEN = re.compile(
    r"""\s*(?:(?P<dq>"(?:[^"\\]|\\.)*")|(?P<sq>'(?:[^'\\]|\\.)*')|(?P<other>[^\s"']+))""",
    re.DOTALL,
)


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text``, outside (single- or double-) quoted strings.

    Iterative, so it measures a body of any depth without recursing.
    """
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in text:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_lenient_json(raw: bytes) -> Any:
    """Parse a body as the service did: JSON, and also JSON with single-quoted strings.

    The service's JSON reader (Json.NET) accepted ``{ 'maxLeaseTime': '4:0:0' }``, and the
    seed's own PowerShell examples send exactly that, so the emulator accepts it too.
    Nesting deeper than :data:`MAX_JSON_DEPTH` is a ``ValueError`` (Json.NET's reader has
    a depth limit too), never a ``RecursionError``.
    """
    text = raw.decode("utf-8-sig")
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError:
        if "'" not in text:
            raise
    pieces: list[str] = []
    position = 0
    while position < len(text):
        match = _LENIENT_TOKEN.match(text, position)
        if match is None or match.end() == position:
            break
        if match["sq"] is not None:
            inner = match["sq"][1:-1].replace("\\'", "'")
            pieces.append(json.dumps(json.loads(f'"{inner.replace(chr(34), chr(92) + chr(34))}"')))
        else:
            pieces.append(match.group(0))
        position = match.end()
    return json.loads("".join(pieces) + text[position:])


class ClientGone(Exception):
    """The client closed the connection before its request body arrived in full."""


def too_large() -> ApiError:
    """413: a body over :data:`MAX_BODY_BYTES` (and the connection closes)."""
    return ApiError(
        413,
        "PayloadTooLarge",
        f"The request body is larger than {MAX_BODY_BYTES} bytes.",
        headers={"Connection": "close"},
    )


def declared_length(request: Request) -> int | None:
    """The request's ``Content-Length``, or None when it has none; 400 when it is not a number."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isascii() or not value.strip().isdigit():
        raise ApiError(400, "BadRequest", "The Content-Length header is not a number.")
    return int(value)


async def read_body(request: Request) -> bytes:
    """The whole body, at most :data:`MAX_BODY_BYTES` (413 beyond); :class:`ClientGone` if the
    client hangs up first. Read as a stream, so an oversized body is refused as soon as it
    passes the limit rather than after it has all been buffered."""
    declared = declared_length(request)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_large()
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


def parse_size(value: Any) -> SessionSize:
    """A body's ``size`` (either API, any case); 400 otherwise."""
    if not isinstance(value, str):
        raise ApiError(400, "BadRequest", "The size must be 'standard' or 'premium'.")
    try:
        return SessionSize.parse(value)
    except InvalidSizeError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None


def parse_v1_lease(body: dict[str, Any]) -> timedelta:
    """v1's ``maxLeaseTime``, a .NET TimeSpan (``"4:0:0"``); 400 when missing or malformed."""
    value = body.get("maxLeaseTime")
    if value is None:
        raise ApiError(400, "BadRequest", "The maxLeaseTime field is required.")
    try:
        return parse_timespan(value)
    except TimeSpanFormatError as exc:
        raise ApiError(400, "BadRequest", f"The maxLeaseTime is not valid: {exc}") from None


def parse_minutes(body: dict[str, Any]) -> int:
    """2021-01-01's ``maxLeaseTimeMinutes``, a whole number; 400 when missing or not one."""
    value = body.get("maxLeaseTimeMinutes")
    if value is None:
        raise ApiError(400, "BadRequest", "The maxLeaseTimeMinutes field is required.")
    # Json.NET read a whole-number float (15.0) into an int field; so does the emulator.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            400, "BadRequest", "The maxLeaseTimeMinutes value must be an integer number of minutes."
        )
    return value


@dataclass
class Call:
    """One request being handled: what it asks, and the emulator it asks it of."""

    request: Request
    emulator: EmulatorCore
    route: str
    account: str
    session_id: str | None
    listings: Listings
    """The app's serialized session lists (see :mod:`arr_prefect.emulator.listing`)."""
    authenticated: bool = False

    @property
    def lock(self) -> AbstractContextManager[Any]:
        return self.emulator.lock

    async def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (lenient, bounded); 400 when it is not one."""
        raw = await read_body(self.request)
        try:
            body = parse_lenient_json(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            # RecursionError: belt and braces behind the depth check; neither is a 500.
            raise ApiError(400, "BadRequest", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "The request body must be a JSON object.")
        return body

    def authenticate(self) -> None:
        """Check the bearer token for the path's account (once per request): 401/403."""
        if self.authenticated:
            return
        with self.lock:
            self.emulator.state.authenticate(
                self.request.headers.get("authorization"), self.account
            )
        self.authenticated = True

    def now(self) -> float:
        return self.emulator.state.now()


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    """A named route: names are what request counts and fault scripts use."""

    name: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


ACCOUNT = r"(?P<account>[^/]+)"
SESSION = r"(?P<session>[^/]+)"


def route(name: str, method: str, pattern: str, handler: Handler) -> RouteSpec:
    """A route whose ``pattern`` may use ``{ACCOUNT}``/``{SESSION}`` captures.

    Literals are matched case-insensitively (v1 paths are; being lenient elsewhere costs
    nothing); the captured ids keep their case (2021-01-01 ids are case-sensitive).
    """
    return RouteSpec(name, method, re.compile(f"{pattern}/?", re.IGNORECASE), handler)
