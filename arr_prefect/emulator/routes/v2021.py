"""The 2021-01-01 session API (ARR_API.md §4).

Every call needs ``?api-version=2021-01-01``; PUT create answers 201 (200 for a
same-settings retry, 409 for other settings), PATCH 200 with the full properties (422 when
the lease does not grow), ``POST .../:stop`` 204, and list pages with an absolute
``@nextLink``.
"""

from __future__ import annotations

import base64
import functools
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from arr_prefect.emulator.faults import FaultAction
from arr_prefect.emulator.listing import ListShape
from arr_prefect.emulator.request import (
    ACCOUNT,
    SESSION,
    Call,
    RouteSpec,
    parse_minutes,
    parse_size,
    route,
)
from arr_prefect.emulator.state import ApiError, SessionRecord
from arr_prefect.emulator.wire import (
    API_VERSION_2021,
    SUPPORTED_API_VERSIONS,
    DroppedResponse,
    JSONResponse,
    json_bytes,
)
from arr_prefect.errors import InvalidSessionIdError
from arr_prefect.models import lease_minutes, validate_session_id

__all__ = [
    "LIST_SHAPE",
    "ROUTES",
    "check_api_version",
    "service_datetime",
    "v2021_properties",
]

_API_VERSION_QUERY = f"api-version={API_VERSION_2021}".encode("ascii")


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
        "elapsedTimeMinutes": LIST_SHAPE.count(record, now),
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


LIST_SHAPE = ListShape(
    name="2021-01-01",
    properties=v2021_properties,
    elapsed_key="elapsedTimeMinutes",
    unit=60.0,
    encode=lambda minutes: str(minutes).encode("ascii"),
)


def check_api_version(request: Request) -> None:
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


async def _create(call: Call) -> Response:
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
    minutes = parse_minutes(body)
    size = parse_size(body.get("size"))
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
        return DroppedResponse(f"lost_create after creating session {record.id}")
    if fault is not None and fault.kind == "slow_create":
        # The session runs (and is listed) while the answer naming it is held.
        await call.emulator.clock.sleep(fault.seconds)
    return JSONResponse(properties, status_code=201 if created else 200)


async def _get(call: Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        record = call.emulator.state.get(call.account, call.session_id)
        return JSONResponse(v2021_properties(record, call.now()))


async def _extend(call: Call) -> Response:
    """PATCH: the new minutes must exceed the current ones (422); 200 with properties."""
    call.authenticate()
    assert call.session_id is not None
    minutes = parse_minutes(await call.json_object())
    with call.lock:
        record = call.emulator.state.extend_v2021(call.account, call.session_id, minutes)
        return JSONResponse(v2021_properties(record, call.now()))


async def _stop(call: Call) -> Response:
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


async def _list(call: Call) -> Response:
    """List active sessions a page at a time; ``@nextLink`` (absolute) only if more remain.

    The page cursor is the last listed session's (creation time, id), so sessions ending
    between pages never make the next page skip one that is still active.
    """
    call.authenticate()
    request = call.request
    # The usual first page's query is the api-version alone: no query to parse then.
    plain = request.scope["query_string"] == _API_VERSION_QUERY
    token = None if plain else request.query_params.get("skipToken")
    after = _decode_cursor(token) if token else None
    page_size = call.emulator.page_size
    with call.lock:
        listing = call.listings.current(call.emulator.state, call.account, LIST_SHAPE)
        start = listing.start_after(after)
        end = start + page_size
        if start == 0 and end >= len(listing.fragments):
            return JSONResponse.of_bytes(listing.body())
        page = b",".join(listing.fragments[start:end])
        last = listing.records[end - 1] if end < len(listing.records) else None
    body = b'{"sessions":[' + page + b"]"
    if last is not None:
        next_url = request.url.include_query_params(
            **{"api-version": API_VERSION_2021, "skipToken": _encode_cursor(last)}
        )
        body += b',"@nextLink":' + json_bytes(str(next_url))
    return JSONResponse.of_bytes(body + b"}")


ROUTES: tuple[RouteSpec, ...] = (
    route("v2021.list", "GET", rf"/accounts/{ACCOUNT}/sessions", _list),
    route("v2021.create", "PUT", rf"/accounts/{ACCOUNT}/sessions/{SESSION}", _create),
    route("v2021.get", "GET", rf"/accounts/{ACCOUNT}/sessions/{SESSION}", _get),
    route("v2021.extend", "PATCH", rf"/accounts/{ACCOUNT}/sessions/{SESSION}", _extend),
    route("v2021.stop", "POST", rf"/accounts/{ACCOUNT}/sessions/{SESSION}/:stop", _stop),
)
