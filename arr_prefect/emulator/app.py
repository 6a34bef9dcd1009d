"""The emulator's HTTP face: one ASGI app that routes every request to its route family.

The families live in :mod:`arr_prefect.emulator.routes` (STS, v1, 2021-01-01, admin);
what every answer looks like on the wire in :mod:`arr_prefect.emulator.wire`; reading a
request and its limits in :mod:`arr_prefect.emulator.request`. This module only routes,
in the service's order of checks: a valid URL and a body within limits, a route (404, or
405 with ``Allow``), the admin token, an injected fault, and for 2021-01-01 the token
before the ``api-version``; then the route's handler.

Routes have names (``sts.token``, ``v1.create``, ``v2021.get``, ``admin.ledger`` ...) used
by the request counts and by fault scripts.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from arr_prefect.emulator.listing import Listings
from arr_prefect.emulator.request import (
    MAX_BODY_BYTES,
    Call,
    ClientGone,
    EmulatorCore,
    RouteSpec,
    declared_length,
    too_large,
)
from arr_prefect.emulator.routes import admin, sts, v1, v2021
from arr_prefect.emulator.state import ApiError
from arr_prefect.emulator.wire import (
    ClientGoneResponse,
    DroppedResponse,
    add_service_headers,
    error_response,
    fault_response,
)

__all__ = ["ROUTES", "ROUTE_NAMES", "EmulatorApp", "create_app"]

_log = logging.getLogger(__name__)

ROUTES: tuple[RouteSpec, ...] = sts.ROUTES + v1.ROUTES + v2021.ROUTES + admin.ROUTES
"""Every route, by name. Names are what request counts and fault scripts use."""

ROUTE_NAMES: tuple[str, ...] = tuple(spec.name for spec in ROUTES)

_ROUTES_BY_METHOD: dict[str, tuple[RouteSpec, ...]] = {
    method: tuple(spec for spec in ROUTES if spec.method == method)
    for method in {spec.method for spec in ROUTES}
}


def _resolve(method: str, path: str) -> tuple[RouteSpec | None, re.Match[str] | None, list[str]]:
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

    def __init__(self, emulator: EmulatorCore) -> None:
        self.emulator = emulator
        self.listings = Listings()

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
        if isinstance(response, DroppedResponse):
            outcome = "dropped"
        elif isinstance(response, ClientGoneResponse):
            outcome = "disconnected"
        add_service_headers(response)
        self.emulator.request_log_record(route, outcome)
        return response

    def record_unrouted(self, status: int) -> None:
        """Count an answer the front end gave before any request reached the app."""
        self.emulator.request_log_record("unknown", status)

    async def _handle(
        self,
        request: Request,
        path: str,
        spec: RouteSpec | None,
        match: re.Match[str] | None,
        allowed: list[str],
        route: str,
    ) -> Response:
        emulator = self.emulator
        try:
            if _CONTROL.search(path):
                # What a front end (http.sys) answers: "Bad Request - Invalid URL".
                raise ApiError(400, "BadRequest", "The request URL is not valid.")
            declared = declared_length(request)
            if declared is not None and declared > MAX_BODY_BYTES:
                raise too_large()
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
            call = Call(
                request=request,
                emulator=emulator,
                route=route,
                account=groups.get("account") or "",
                session_id=groups.get("session"),
                listings=self.listings,
            )
            if route.startswith("admin.") and route != "admin.health":
                admin.check_admin_token(request, emulator.admin_token)
            if not route.startswith("admin."):
                action = emulator.faults.take_request_fault(route, call.session_id)
                if action is not None:
                    if action.kind == "slow":
                        await emulator.clock.sleep(action.seconds)
                    elif action.kind == "drop":
                        return DroppedResponse(f"drop fault on {route}")
                    else:
                        return fault_response(action)
            if route.startswith("v2021."):
                # The service authenticates first: no token and no api-version is a 401.
                call.authenticate()
                v2021.check_api_version(request)
            return await spec.handler(call)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, headers=exc.headers)
        except ClientGone:
            # Not the emulator's failure and not worth a traceback: the answer goes nowhere.
            _log.info("arr-emulator: the client hung up before sending all of %s's body", route)
            return ClientGoneResponse()
        except Exception:  # noqa: BLE001 - logged below; answered as the service would
            # A bug in the emulator must still answer like the service (JSON body, MS-CV),
            # so that a client under test reports it as a 500 rather than a parse error.
            _log.exception("arr-emulator: unexpected error handling %s", route)
            return error_response(500, "InternalServerError", "The emulator failed unexpectedly.")


def create_app(emulator: EmulatorCore) -> EmulatorApp:
    """The emulator's ASGI app: STS, v1, 2021-01-01 and ``/_emulator/`` admin routes."""
    return EmulatorApp(emulator)
