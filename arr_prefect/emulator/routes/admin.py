"""The admin API, ``/_emulator/``: health, the ledger, request counts, faults, tokens, clock.

Open on loopback; with an admin token set (``arr-emulator`` sets one whenever it listens
beyond loopback), every route but ``/_emulator/health`` requires it
(:func:`check_admin_token`).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator.request import Call, RouteSpec, route
from arr_prefect.emulator.state import ApiError, isoformat
from arr_prefect.emulator.wire import JSONResponse

__all__ = ["ROUTES", "check_admin_token"]

_MAX_ADVANCE_SECONDS = 100 * 366 * 86400.0


def check_admin_token(request: Request, token: str | None) -> None:
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


async def _health(call: Call) -> Response:
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


async def _ledger(call: Call) -> Response:
    return JSONResponse(call.emulator.ledger())


async def _requests(call: Call) -> Response:
    return JSONResponse({"counts": call.emulator.request_counts()})


async def _faults_get(call: Call) -> Response:
    return JSONResponse(call.emulator.faults.config())


async def _faults_set(call: Call) -> Response:
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


async def _faults_clear(call: Call) -> Response:
    call.emulator.faults.clear()
    return Response(status_code=204)


async def _tokens_expire(call: Call) -> Response:
    return JSONResponse({"revoked": call.emulator.expire_tokens()})


async def _clock_advance(call: Call) -> Response:
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


ROUTES: tuple[RouteSpec, ...] = (
    route("admin.health", "GET", r"/_emulator/health", _health),
    route("admin.ledger", "GET", r"/_emulator/ledger", _ledger),
    route("admin.requests", "GET", r"/_emulator/requests", _requests),
    route("admin.faults.get", "GET", r"/_emulator/faults", _faults_get),
    route("admin.faults.set", "POST", r"/_emulator/faults", _faults_set),
    route("admin.faults.clear", "DELETE", r"/_emulator/faults", _faults_clear),
    route("admin.tokens.expire", "POST", r"/_emulator/tokens/expire", _tokens_expire),
    route("admin.clock.advance", "POST", r"/_emulator/clock/advance", _clock_advance),
)
