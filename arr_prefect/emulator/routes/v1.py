"""The seed's session API, "v1" (ARR_API.md §3).

Paths are case-insensitive (the seed writes ``/v1/Accounts/.../Create``); create answers
**202** ``{"sessionId"}`` with ``Location: accounts/{accountId}/sessions/{id}``, extend
answers 200 with an **empty** body, stop 204, properties and list 200.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Any

from starlette.responses import Response

from arr_prefect.emulator.listing import ListShape
from arr_prefect.emulator.request import (
    ACCOUNT,
    MAX_MODEL_CHARS,
    MAX_MODELS,
    SESSION,
    Call,
    RouteSpec,
    parse_size,
    parse_v1_lease,
    route,
)
from arr_prefect.emulator.state import ApiError, SessionRecord
from arr_prefect.emulator.wire import DroppedResponse, JSONResponse
from arr_prefect.models import format_timespan

__all__ = ["LIST_SHAPE", "ROUTES", "v1_properties"]


@functools.lru_cache(maxsize=4096)  # listed sessions share their elapsed seconds
def _timespan_of_seconds(seconds: int) -> str:
    return format_timespan(timedelta(seconds=seconds))


def v1_properties(record: SessionRecord, now: float) -> dict[str, Any]:
    """v1 properties: ``session*`` names, TimeSpans, host and ports once Ready (else null).

    ``sessionElapsedTime`` is the time spent Ready, in whole seconds.
    """
    reached_ready = record.ready_at is not None
    return {
        "message": record.message,
        "sessionElapsedTime": _timespan_of_seconds(LIST_SHAPE.count(record, now)),
        "sessionHostname": record.hostname if reached_ready else None,
        "sessionId": record.id,
        "sessionMaxLeaseTime": format_timespan(record.max_lease),
        "sessionSize": record.size.value,
        "sessionStatus": record.status.value,
        "arrInspectorPort": record.arr_inspector_port if reached_ready else None,
        "handshakePort": record.handshake_port if reached_ready else None,
    }


def _encode_elapsed(seconds: int) -> bytes:
    # A TimeSpan is digits, '.' and ':': nothing JSON escapes, so quoting is all it needs.
    return b'"' + _timespan_of_seconds(seconds).encode("ascii") + b'"'


LIST_SHAPE = ListShape(
    name="v1",
    properties=v1_properties,
    elapsed_key="sessionElapsedTime",
    unit=1.0,
    encode=_encode_elapsed,
)


async def _create(call: Call) -> Response:
    """v1 create: **not idempotent**; 202, ``{"sessionId"}`` and a relative ``Location``."""
    call.authenticate()
    body = await call.json_object()
    lease = parse_v1_lease(body)
    size = parse_size(body.get("size"))
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
        return DroppedResponse(f"lost_create after creating session {record.id}")
    if fault is not None and fault.kind == "slow_create":
        # The session runs (and is listed) while the answer naming it is held.
        await call.emulator.clock.sleep(fault.seconds)
    return JSONResponse(
        {"sessionId": record.id},
        status_code=202,
        headers={"Location": f"accounts/{call.account}/sessions/{record.id}"},
    )


async def _get(call: Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        record = call.emulator.state.get(call.account, call.session_id)
        return JSONResponse(v1_properties(record, call.now()))


async def _list(call: Call) -> Response:
    """Every active session in one answer: ``{"sessions": [...]}``, oldest first."""
    call.authenticate()
    with call.lock:
        listing = call.listings.current(call.emulator.state, call.account, LIST_SHAPE)
        return JSONResponse.of_bytes(listing.body())


async def _extend(call: Call) -> Response:
    """v1 extend: the lease is the total since Ready; 200 with an empty body."""
    call.authenticate()
    assert call.session_id is not None
    lease = parse_v1_lease(await call.json_object())
    with call.lock:
        call.emulator.state.extend_v1(call.account, call.session_id, lease)
    return Response(status_code=200)


async def _stop(call: Call) -> Response:
    call.authenticate()
    assert call.session_id is not None
    with call.lock:
        call.emulator.state.stop(call.account, call.session_id)
    return Response(status_code=204)


ROUTES: tuple[RouteSpec, ...] = (
    route("v1.create", "POST", rf"/v1/accounts/{ACCOUNT}/sessions/create", _create),
    route("v1.list", "GET", rf"/v1/accounts/{ACCOUNT}/sessions", _list),
    route("v1.get", "GET", rf"/v1/accounts/{ACCOUNT}/sessions/{SESSION}/properties", _get),
    route("v1.extend", "PATCH", rf"/v1/accounts/{ACCOUNT}/sessions/{SESSION}", _extend),
    route("v1.stop", "DELETE", rf"/v1/accounts/{ACCOUNT}/sessions/{SESSION}", _stop),
)
