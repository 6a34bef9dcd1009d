"""The emulator's HTTP face: the STS, both session APIs and an admin API, as one ASGI app.

Wire facts reproduced here (ARR_API.md §2-§4):

- STS ``GET /accounts/{accountId}/token`` (``Accounts`` too, optional ``api-version``),
  ``Authorization: Bearer {accountId}:{accountKey}`` -> 200 ``{"AccessToken": "<JWT>"}``:
  PascalCase and no expiry field (the expiry is the JWT's ``exp``).
- v1 paths are case-insensitive (the seed writes ``/v1/Accounts/.../Create``); create
  answers **202** ``{"sessionId"}`` with ``Location: accounts/{accountId}/sessions/{id}``,
  extend answers 200 with an **empty** body, stop 204, properties and list 200.
- 2021-01-01 needs ``?api-version=2021-01-01`` on every call; PUT create answers 201
  (200 for a same-settings retry, 409 for other settings), PATCH 200 with the full
  properties (422 when the lease does not grow), ``POST .../:stop`` 204, and list pages
  with an absolute ``@nextLink``.
- Every answer carries ``MS-CV``; errors are ``{"error": {"code", "message"}}``; a 401
  carries ``WWW-Authenticate: Bearer error="invalid_token"``, a 429 ``Retry-After``.

Routes have names (``sts.token``, ``v1.create``, ``v2021.get``, ``admin.ledger`` ...) used
by the request counts and by fault scripts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator.faults import FaultAction
from arr_prefect.emulator.state import ApiError, SessionRecord, isoformat
from arr_prefect.errors import InvalidSessionIdError, InvalidSizeError, TimeSpanFormatError
from arr_prefect.models import (
    SessionSize,
    format_timespan,
    lease_minutes,
    parse_timespan,
    validate_session_id,
)

if TYPE_CHECKING:
    from arr_prefect.emulator.service import Emulator


class JSONResponse(_StarletteJSONResponse):
    """JSON with the service's exact Content-Type, ``application/json; charset=utf-8``."""

    media_type = "application/json; charset=utf-8"

    def __init__(
        self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        if headers is not None:
            super().__init__(content, status_code, headers)
            return
        # Starlette's own steps for an answer with no extra headers (render, then the two
        # headers), without its generic header merging: every GET passes here.
        self.status_code = status_code
        self.background = None
        self.body = body = self.render(content)
        self.raw_headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", _JSON_CONTENT_TYPE),
        ]


_JSON_CONTENT_TYPE = JSONResponse.media_type.encode("latin-1")


__all__ = [
    "API_VERSION_2021",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MODELS",
    "MAX_MODEL_CHARS",
    "SUPPORTED_API_VERSIONS",
    "EmulatedConnectionDrop",
    "EmulatorApp",
    "create_app",
    "v1_properties",
    "v2021_properties",
]

API_VERSION_2021 = "2021-01-01"
SUPPORTED_API_VERSIONS = ("2021-01-01-preview", API_VERSION_2021)
"""What ``?api-version=`` may say on the session API (and the ``api-supported-versions``
header lists). The preview shares the stable version's session shapes; the spec's own
update example is written against it."""
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
_log = logging.getLogger(__name__)
_SERVER_ERROR_CODES = {
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class EmulatedConnectionDrop(httpx.RemoteProtocolError):
    """Raised by the app, after the response has started, to break the connection.

    Subclassing :class:`httpx.RemoteProtocolError` makes an in-process client
    (``httpx.ASGITransport``) see exactly what a real client sees when uvicorn aborts
    the connection mid-response: an :class:`httpx.TransportError`.
    """


_API_VERSION_QUERY = f"api-version={API_VERSION_2021}".encode("ascii")


def new_correlation_vector() -> str:
    """A correlation vector like the service's ``MS-CV``: ``<base64 of 16 bytes>.0``."""
    # 16 bytes are 22 base64 characters and "==" of padding.
    return binascii.b2a_base64(os.urandom(16), newline=False)[:22].decode("ascii") + ".0"


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The service's error body: ``{"error": {"code": ..., "message": ...}}``.

    Every refusal carries it, 401, 403, 404 and 429 included, although the 2021-01-01
    spec gives those four no schema and its examples show headers only (``MS-CV``, plus
    ``WWW-Authenticate`` on 401 and ``Retry-After`` on 429). The spec marks them
    ``x-ms-error-response``, which tells Azure SDKs to read an ``error_response`` body
    when one is there, and leaves the body open; the recorded exchange has none of them.
    Sending the same ``{"error": {"code", "message"}}`` as the documented 400/409/422/500
    keeps one rule for every answer (it is JSON, and it names its problem), and a
    client that relies only on the spec's headers is served just as well.
    """
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class _DroppedResponse(Response):
    """Start a 200 answer promising more bytes than it sends, then break the connection."""

    def __init__(self, reason: str) -> None:
        super().__init__(status_code=200)
        self.reason = reason

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"4096"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise EmulatedConnectionDrop(f"arr-emulator dropped the connection ({self.reason})")


def _elapsed_timespan(elapsed: timedelta) -> str:
    return format_timespan(timedelta(seconds=math.floor(elapsed.total_seconds())))


def v1_properties(record: SessionRecord, now: float) -> dict[str, Any]:
    """v1 properties: ``session*`` names, TimeSpans, host and ports once Ready (else null)."""
    reached_ready = record.ready_at is not None
    return {
        "message": record.message,
        "sessionElapsedTime": _elapsed_timespan(record.elapsed(now)),
        "sessionHostname": record.hostname if reached_ready else None,
        "sessionId": record.id,
        "sessionMaxLeaseTime": format_timespan(record.max_lease),
        "sessionSize": record.size.value,
        "sessionStatus": record.status.value,
        "arrInspectorPort": record.arr_inspector_port if reached_ready else None,
        "handshakePort": record.handshake_port if reached_ready else None,
    }


@functools.lru_cache(maxsize=16384)  # a session's creationTime, asked on every GET
def service_datetime(timestamp: float) -> str:
    """A time as the service wrote ``creationTime``: 7 fractional digits (.NET ticks) and
    ``+00:00``, e.g. ``2022-03-01T10:00:00.1234560+00:00`` (the recorded exchange)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "0+00:00")


def v2021_properties(record: SessionRecord, now: float) -> dict[str, Any]:
    """2021-01-01 properties, shaped as the recorded exchange shows them.

    - ``elapsedTimeMinutes`` is rounded down; ``creationTime`` per :func:`service_datetime`.
    - ``hostname``, ``handshakePort`` and ``arrInspectorPort`` appear once Ready and
      disappear again when the session ends (the recorded GET after ``:stop`` has none:
      the VM is gone); ``teraflops`` stays.
    - ``error`` appears only when there is one: the recorded answers have no ``error`` key
      at all (the spec's examples write ``"error": null``; the schema makes it optional,
      so both readings agree with it).
    """
    body: dict[str, Any] = {
        "id": record.id,
        "creationTime": service_datetime(record.created_at),
        "size": record.size.value,
        "status": record.status.value,
        "maxLeaseTimeMinutes": lease_minutes(record.max_lease),
        "elapsedTimeMinutes": math.floor(record.elapsed(now).total_seconds() / 60),
    }
    if record.ready_at is not None:
        if record.is_active:
            body["hostname"] = record.hostname
            body["handshakePort"] = record.handshake_port
            body["arrInspectorPort"] = record.arr_inspector_port
        body["teraflops"] = record.teraflops
    if record.message:
        body["error"] = {"code": record.error_code or "Error", "message": record.message}
    return body


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


@dataclass
class _Call:
    """One request being handled."""

    request: Request
    emulator: Emulator
    route: str
    account: str
    session_id: str | None

    @property
    def lock(self) -> Any:
        return self.emulator.lock

    async def json_object(self) -> dict[str, Any]:
        raw = await read_body(self.request)
        try:
            body = parse_lenient_json(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            # RecursionError: belt and braces behind the depth check; neither is a 500.
            raise ApiError(400, "BadRequest", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "The request body must be a JSON object.")
        return body

    authenticated: bool = False

    def authenticate(self) -> None:
        if self.authenticated:
            return
        with self.lock:
            self.emulator.state.authenticate(
                self.request.headers.get("authorization"), self.account
            )
        self.authenticated = True

    def now(self) -> float:
        return self.emulator.state.now()


Handler = Callable[[_Call], Awaitable[Response]]


class ClientGone(Exception):
    """The client closed the connection before its request body arrived in full."""


def _too_large() -> ApiError:
    return ApiError(
        413,
        "PayloadTooLarge",
        f"The request body is larger than {MAX_BODY_BYTES} bytes.",
        headers={"Connection": "close"},
    )


def _declared_length(request: Request) -> int | None:
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
    declared = _declared_length(request)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _too_large()
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


def _parse_size(value: Any) -> SessionSize:
    if not isinstance(value, str):
        raise ApiError(400, "BadRequest", "The size must be 'standard' or 'premium'.")
    try:
        return SessionSize.parse(value)
    except InvalidSizeError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None


def _parse_v1_lease(body: dict[str, Any]) -> timedelta:
    value = body.get("maxLeaseTime")
    if value is None:
        raise ApiError(400, "BadRequest", "The maxLeaseTime field is required.")
    try:
        return parse_timespan(value)
    except TimeSpanFormatError as exc:
        raise ApiError(400, "BadRequest", f"The maxLeaseTime is not valid: {exc}") from None


def _parse_minutes(body: dict[str, Any]) -> int:
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


# --- STS ---------------------------------------------------------------------------------


async def _sts_token(call: _Call) -> Response:
    with call.lock:
        token = call.emulator.state.issue_token(
            call.account, call.request.headers.get("authorization")
        )
    return JSONResponse({"AccessToken": token})


# --- v1 ----------------------------------------------------------------------------------


async def _v1_create(call: _Call) -> Response:
    """v1 create: **not idempotent**; 202, ``{"sessionId"}`` and a relative ``Location``."""
    call.authenticate()
    body = await call.json_object()
    lease = _parse_v1_lease(body)
    size = _parse_size(body.get("size"))
    models = body.get("models", [])
    if not isinstance(models, list):
        raise ApiError(400, "BadRequest", "The models field must be a list.")
    stored = [m if isinstance(m, str) else json.dumps(m) for m in models]
    if len(stored) > MAX_MODELS or any(len(m) > MAX_MODEL_CHARS for m in stored):
        raise ApiError(
            400,
            "BadRequest",
            f"The models field takes at most {MAX_MODELS} entries of at most"
            f" {MAX_MODEL_CHARS} characters each.",
        )
    with call.lock:
        # Quota first: a refused create must not use up a scripted create fault.
        call.emulator.state.check_quota(call.account)
        fault = call.emulator.faults.take_create_fault(call.route, None)
        record = call.emulator.state.create_v1(
            call.account,
            size=size,
            max_lease=lease,
            models=stored,
            no_capacity=fault is not None and fault.kind == "no_capacity",
            fail_reason=fault.reason
            if fault is not None and fault.kind == "session_error"
            else None,
        )
    if fault is not None and fault.kind == "lost_create":
        return _DroppedResponse(f"lost_create after creating session {record.id}")
    return JSONResponse(
        {"sessionId": record.id},
        status_code=202,
        headers={"Location": f"accounts/{call.account}/sessions/{record.id}"},
    )


async def _v1_get(call: _Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        record = call.emulator.state.get(call.account, call.session_id)
        return JSONResponse(v1_properties(record, call.now()))


async def _v1_list(call: _Call) -> Response:
    call.authenticate()
    with call.lock:
        now = call.now()
        records = call.emulator.state.list_active(call.account)
        return JSONResponse({"sessions": [v1_properties(r, now) for r in records]})


async def _v1_extend(call: _Call) -> Response:
    """v1 extend: the lease is the total since Ready; 200 with an empty body."""
    call.authenticate()
    assert call.session_id is not None
    lease = _parse_v1_lease(await call.json_object())
    with call.lock:
        call.emulator.state.extend_v1(call.account, call.session_id, lease)
    return Response(status_code=200)


async def _v1_stop(call: _Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        call.emulator.state.stop(call.account, call.session_id)
    return Response(status_code=204)


# --- 2021-01-01 ---------------------------------------------------------------------------


async def _v2021_create(call: _Call) -> Response:
    """PUT: 201 new, 200 same-settings retry (idempotent), 409 other settings."""
    call.authenticate()
    assert call.session_id is not None
    try:
        validate_session_id(call.session_id)
    except InvalidSessionIdError:
        raise ApiError(
            400,
            "BadRequest",
            "The session id must be 1 to 256 letters, digits, '-' or '_'.",
        ) from None
    body = await call.json_object()
    minutes = _parse_minutes(body)
    size = _parse_size(body.get("size"))
    with call.lock:
        state = call.emulator.state
        fault: FaultAction | None = None
        if not state.exists(call.account, call.session_id):
            state.check_quota(call.account)
            fault = call.emulator.faults.take_create_fault(call.route, call.session_id)
        record, created = state.create_v2021(
            call.account,
            call.session_id,
            size=size,
            max_lease_minutes=minutes,
            no_capacity=fault is not None and fault.kind == "no_capacity",
            fail_reason=fault.reason
            if fault is not None and fault.kind == "session_error"
            else None,
        )
        properties = v2021_properties(record, call.now())
    if fault is not None and fault.kind == "lost_create":
        return _DroppedResponse(f"lost_create after creating session {record.id}")
    return JSONResponse(properties, status_code=201 if created else 200)


async def _v2021_get(call: _Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        record = call.emulator.state.get(call.account, call.session_id)
        return JSONResponse(v2021_properties(record, call.now()))


async def _v2021_extend(call: _Call) -> Response:
    """PATCH: the new minutes must exceed the current ones (422); 200 with properties."""
    call.authenticate()
    assert call.session_id is not None
    minutes = _parse_minutes(await call.json_object())
    with call.lock:
        record = call.emulator.state.extend_v2021(call.account, call.session_id, minutes)
        return JSONResponse(v2021_properties(record, call.now()))


async def _v2021_stop(call: _Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        call.emulator.state.stop(call.account, call.session_id)
    return Response(status_code=204)


def _encode_cursor(record: SessionRecord) -> str:
    raw = json.dumps([record.created_at, record.id]).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(token: str) -> tuple[float, str]:
    try:
        created_at, session_id = json.loads(
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        )
        return float(created_at), str(session_id)
    except (ValueError, TypeError, RecursionError):
        raise ApiError(400, "BadRequest", "The skipToken is not valid.") from None


async def _v2021_list(call: _Call) -> Response:
    """List active sessions a page at a time; ``@nextLink`` (absolute) only if more remain.

    The page cursor is the last listed session's (creation time, id), so sessions ending
    between pages never make the next page skip one that is still active.
    """
    call.authenticate()
    token = call.request.query_params.get("skipToken")
    after = _decode_cursor(token) if token else None
    page_size = call.emulator.page_size
    with call.lock:
        now = call.now()
        records = call.emulator.state.list_active(call.account)
        if after is not None:
            records = [r for r in records if (r.created_at, r.id) > after]
        page = records[:page_size]
        body: dict[str, Any] = {"sessions": [v2021_properties(r, now) for r in page]}
    if len(records) > page_size:
        next_url = call.request.url.include_query_params(
            **{"api-version": API_VERSION_2021, "skipToken": _encode_cursor(page[-1])}
        )
        body["@nextLink"] = str(next_url)
    return JSONResponse(body)


# --- admin --------------------------------------------------------------------------------


async def _admin_health(call: _Call) -> Response:
    with call.lock:
        running = call.emulator.state.running_count()
    return JSONResponse(
        {
            "status": "ok",
            "time": isoformat(call.now()),
            "clock": repr(call.emulator.clock),
            "running": running,
        }
    )


async def _admin_ledger(call: _Call) -> Response:
    return JSONResponse(call.emulator.ledger())


async def _admin_requests(call: _Call) -> Response:
    return JSONResponse({"counts": call.emulator.request_counts()})


async def _admin_faults_get(call: _Call) -> Response:
    return JSONResponse(call.emulator.faults.config())


async def _admin_faults_set(call: _Call) -> Response:
    """Body: ``{"random": {p_throttle, ..., seed}, "scripted": [{kind, route, times, ...}]}``
    or a single scripted fault ``{"kind": ..., ...}``."""
    body = await call.json_object()
    faults = call.emulator.faults
    try:
        scripted = body.get("scripted", [])
        if "kind" in body:
            scripted = [body]
        if not isinstance(scripted, list) or not all(isinstance(f, dict) for f in scripted):
            raise ValueError("scripted must be a list of fault objects")
        random_config = body.get("random")
        if random_config is not None:
            if not isinstance(random_config, dict):
                raise ValueError("random must be an object of probabilities")
            faults.set_random(**random_config)
        for spec in scripted:
            faults.add(**spec)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "BadRequest", f"Invalid fault configuration: {exc}") from None
    return JSONResponse(faults.config())


async def _admin_faults_clear(call: _Call) -> Response:
    call.emulator.faults.clear()
    return Response(status_code=204)


async def _admin_tokens_expire(call: _Call) -> Response:
    return JSONResponse({"revoked": call.emulator.expire_tokens()})


_MAX_ADVANCE_SECONDS = 100 * 366 * 86400.0


async def _admin_clock_advance(call: _Call) -> Response:
    clock = call.emulator.clock
    if not isinstance(clock, VirtualClock):
        raise ApiError(409, "Conflict", f"The emulator's clock ({clock!r}) is not a VirtualClock.")
    seconds = (await call.json_object()).get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= _MAX_ADVANCE_SECONDS
    ):
        # Bounded (and finite: Python's JSON reads Infinity): the clock must stay a date.
        raise ApiError(
            400, "BadRequest", f"seconds must be a number from 0 to {_MAX_ADVANCE_SECONDS:.0f}."
        )
    with call.lock:
        clock.advance(float(seconds))
    return JSONResponse({"time": isoformat(clock.time())})


# --- routing ------------------------------------------------------------------------------

_ACCOUNT = r"(?P<account>[^/]+)"
_SESSION = r"(?P<session>[^/]+)"


@dataclass(frozen=True)
class _RouteSpec:
    name: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _spec(name: str, method: str, pattern: str, handler: Handler) -> _RouteSpec:
    # Literals are matched case-insensitively (v1 paths are; being lenient elsewhere
    # costs nothing); the captured ids keep their case (2021-01-01 ids are case-sensitive).
    return _RouteSpec(name, method, re.compile(f"{pattern}/?", re.IGNORECASE), handler)


ROUTES: tuple[_RouteSpec, ...] = (
    _spec("sts.token", "GET", rf"/accounts/{_ACCOUNT}/token", _sts_token),
    _spec("v1.create", "POST", rf"/v1/accounts/{_ACCOUNT}/sessions/create", _v1_create),
    _spec("v1.list", "GET", rf"/v1/accounts/{_ACCOUNT}/sessions", _v1_list),
    _spec("v1.get", "GET", rf"/v1/accounts/{_ACCOUNT}/sessions/{_SESSION}/properties", _v1_get),
    _spec("v1.extend", "PATCH", rf"/v1/accounts/{_ACCOUNT}/sessions/{_SESSION}", _v1_extend),
    _spec("v1.stop", "DELETE", rf"/v1/accounts/{_ACCOUNT}/sessions/{_SESSION}", _v1_stop),
    _spec("v2021.list", "GET", rf"/accounts/{_ACCOUNT}/sessions", _v2021_list),
    _spec("v2021.create", "PUT", rf"/accounts/{_ACCOUNT}/sessions/{_SESSION}", _v2021_create),
    _spec("v2021.get", "GET", rf"/accounts/{_ACCOUNT}/sessions/{_SESSION}", _v2021_get),
    _spec("v2021.extend", "PATCH", rf"/accounts/{_ACCOUNT}/sessions/{_SESSION}", _v2021_extend),
    _spec("v2021.stop", "POST", rf"/accounts/{_ACCOUNT}/sessions/{_SESSION}/:stop", _v2021_stop),
    _spec("admin.health", "GET", r"/_emulator/health", _admin_health),
    _spec("admin.ledger", "GET", r"/_emulator/ledger", _admin_ledger),
    _spec("admin.requests", "GET", r"/_emulator/requests", _admin_requests),
    _spec("admin.faults.get", "GET", r"/_emulator/faults", _admin_faults_get),
    _spec("admin.faults.set", "POST", r"/_emulator/faults", _admin_faults_set),
    _spec("admin.faults.clear", "DELETE", r"/_emulator/faults", _admin_faults_clear),
    _spec("admin.tokens.expire", "POST", r"/_emulator/tokens/expire", _admin_tokens_expire),
    _spec("admin.clock.advance", "POST", r"/_emulator/clock/advance", _admin_clock_advance),
)
"""Every route, by name. Names are what request counts and fault scripts use."""

ROUTE_NAMES: tuple[str, ...] = tuple(spec.name for spec in ROUTES)


_ROUTES_BY_METHOD: dict[str, tuple[_RouteSpec, ...]] = {
    method: tuple(spec for spec in ROUTES if spec.method == method)
    for method in {spec.method for spec in ROUTES}
}


def _resolve(method: str, path: str) -> tuple[_RouteSpec | None, re.Match[str] | None, list[str]]:
    # The method's own routes first (every request a client sends right); only a request
    # no route of its method takes is matched against them all, to answer 405 or 404.
    for spec in _ROUTES_BY_METHOD.get(method, ()):
        match = spec.pattern.fullmatch(path)
        if match is not None:
            return spec, match, []
    allowed: list[str] = []
    for spec in ROUTES:
        # fullmatch: "$" would also match before a trailing newline ("/sessions\n").
        match = spec.pattern.fullmatch(path)
        if match is None:
            continue
        if spec.method == method:
            return spec, match, allowed
        allowed.append(spec.method)
    return None, None, allowed


def _fault_response(action: FaultAction) -> Response:
    if action.kind == "throttle":
        return error_response(
            429,
            "TooManyRequests",
            "Too many requests: slow down (the service asks for 5-10 s between polls).",
            headers={"Retry-After": str(int(action.retry_after))},
        )
    code = _SERVER_ERROR_CODES.get(action.status, "InternalServerError")
    # The spec's examples word a 500 so; the other 5xx come from a front end.
    message = (
        "An internal server error occurred."
        if action.status == 500
        else f"The service is temporarily unavailable ({action.status}, injected)."
    )
    return error_response(action.status, code, message)


_ABSOLUTE_FORM = re.compile(r"https?://[^/?#]*(?P<path>/.*)?", re.IGNORECASE | re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _request_path(scope: Scope) -> str:
    """The path to route. An absolute-form target (``GET http://host/x``), which HTTP/1.1
    servers must accept (RFC 9112 §3.2.2), routes by its path."""
    path = str(scope.get("path") or "")
    if path.startswith("/"):
        return path  # origin-form, as every client sends
    absolute = _ABSOLUTE_FORM.fullmatch(path)
    if absolute is not None:
        path = absolute["path"] or "/"
    return path


class EmulatorApp:
    """The emulator's ASGI app: every HTTP request, whatever its target, reaches one dispatcher.

    No framework router sits in front, so there is no answer the service would not give:
    an unknown path, a wrong method, a control character in a path segment, a body too
    large or a bug in the emulator all answer the service's JSON error with ``MS-CV``, and
    every request lands in the request log (route ``unknown`` when no route matched).
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":  # websockets: the service has none
            return
        request = Request(scope, receive)
        response = await self.dispatch(request)
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        """Answer one request; record its route and status in the request log."""
        path = _request_path(request.scope)
        spec, match, allowed = _resolve(request.method, path)
        route = spec.name if spec is not None else "unknown"
        response = await self._handle(request, path, spec, match, allowed, route)
        outcome: int | str = response.status_code
        if isinstance(response, _DroppedResponse):
            outcome = "dropped"
        elif isinstance(response, _ClientGoneResponse):
            outcome = "disconnected"
        add_service_headers(response)
        self.emulator.request_log_record(route, outcome)
        return response

    async def _handle(
        self,
        request: Request,
        path: str,
        spec: _RouteSpec | None,
        match: re.Match[str] | None,
        allowed: list[str],
        route: str,
    ) -> Response:
        emulator = self.emulator
        try:
            if _CONTROL.search(path):
                # What a front end (http.sys) answers: "Bad Request - Invalid URL".
                raise ApiError(400, "BadRequest", "The request URL is not valid.")
            declared = _declared_length(request)
            if declared is not None and declared > MAX_BODY_BYTES:
                raise _too_large()
            if spec is None or match is None:
                if allowed:
                    raise ApiError(
                        405,
                        "MethodNotAllowed",
                        f"The method {request.method} is not allowed on {path}.",
                        headers={"Allow": ", ".join(sorted(set(allowed)))},
                    )
                raise ApiError(404, "NotFound", f"No route for {path}.")
            groups = match.groupdict()
            call = _Call(
                request=request,
                emulator=emulator,
                route=route,
                account=groups.get("account") or "",
                session_id=groups.get("session"),
            )
            if route.startswith("admin.") and route != "admin.health":
                _check_admin_token(request, emulator.admin_token)
            if not route.startswith("admin."):
                action = emulator.faults.take_request_fault(route, call.session_id)
                if action is not None:
                    if action.kind == "slow":
                        await emulator.clock.sleep(action.seconds)
                    elif action.kind == "drop":
                        return _DroppedResponse(f"drop fault on {route}")
                    else:
                        return _fault_response(action)
            if route.startswith("v2021."):
                # The service authenticates first: no token and no api-version is a 401.
                call.authenticate()
                _check_api_version(request)
            return await spec.handler(call)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, headers=exc.headers)
        except ClientGone:
            # Not the emulator's failure and not worth a traceback: the answer goes nowhere.
            _log.info("arr-emulator: the client hung up before sending all of %s's body", route)
            return _ClientGoneResponse()
        except Exception:  # noqa: BLE001 - logged below; answered as the service would
            # A bug in the emulator must still answer like the service (JSON body, MS-CV),
            # so that a client under test reports it as a 500 rather than a parse error.
            _log.exception("arr-emulator: unexpected error handling %s", route)
            return error_response(500, "InternalServerError", "The emulator failed unexpectedly.")


class _ClientGoneResponse(JSONResponse):
    """The answer to a request whose client hung up mid-body: sent into the void.

    (uvicorn drops what is sent on a closed connection; an in-process caller sees a 400.)
    """

    def __init__(self) -> None:
        super().__init__(
            {
                "error": {
                    "code": "BadRequest",
                    "message": "The connection closed before the request body was complete.",
                }
            },
            status_code=400,
        )


SERVICE_HEADERS = {
    "api-supported-versions": ", ".join(SUPPORTED_API_VERSIONS),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Pragma": "no-cache",
}


_RAW_SERVICE_HEADERS = [
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SERVICE_HEADERS.items()
]


def add_service_headers(response: Response) -> None:
    """The headers every answer of the service carries, a fresh ``MS-CV`` first."""
    # Straight onto the raw list (MutableHeaders rescans it on every set: a tenth of a GET).
    raw = response.raw_headers
    cv = (b"ms-cv", new_correlation_vector().encode("latin-1"))
    if len(raw) == 2 and raw[0][0] == b"content-length" and raw[1][0] == b"content-type":
        raw.append(cv)  # what JSONResponse builds: nothing of ours there yet
        raw.extend(_RAW_SERVICE_HEADERS)
        return
    present = {name for name, _ in raw}
    if b"ms-cv" in present:
        raw[:] = [(name, value) for name, value in raw if name != b"ms-cv"]
    raw.append(cv)
    raw.extend(item for item in _RAW_SERVICE_HEADERS if item[0] not in present)


def create_app(emulator: Emulator) -> EmulatorApp:
    """The emulator's ASGI app: STS, v1, 2021-01-01 and ``/_emulator/`` admin routes."""
    return EmulatorApp(emulator)


def _check_admin_token(request: Request, token: str | None) -> None:
    """The admin API is open on loopback; with a token set, it must be presented.

    ``arr-emulator`` sets one whenever it listens beyond loopback, where anyone on the
    network could otherwise inject faults or read every session from the ledger.
    ``/_emulator/health`` stays open: it is what a readiness probe polls.
    """
    if token is None:
        return
    authorization = request.headers.get("authorization", "")
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(
            401,
            "Unauthorized",
            "The admin API needs 'Authorization: Bearer <admin token>' (arr-emulator prints"
            " it at start, or it is the --admin-token / ARR_EMULATOR_ADMIN_TOKEN given).",
            headers={"WWW-Authenticate": 'Bearer realm="arr-emulator-admin"'},
        )


def _check_api_version(request: Request) -> None:
    """2021-01-01 calls must name their version: ``?api-version=2021-01-01``."""
    if request.scope["query_string"] == _API_VERSION_QUERY:
        return  # the usual query, without building a parsed QueryParams
    version = request.query_params.get("api-version")
    if version is None:
        raise ApiError(
            400,
            "MissingApiVersionParameter",
            f"The api-version query parameter is required (?api-version={API_VERSION_2021}).",
        )
    if version not in SUPPORTED_API_VERSIONS:
        raise ApiError(
            400,
            "UnsupportedApiVersion",
            f"The api-version '{version}' is not supported: use {API_VERSION_2021}.",
        )
