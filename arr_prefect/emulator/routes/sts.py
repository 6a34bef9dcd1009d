"""The token service (ARR_API.md §2).

``GET /accounts/{accountId}/token`` (``Accounts`` too, optional ``api-version``),
``Authorization: Bearer {accountId}:{accountKey}`` -> 200 ``{"AccessToken": "<JWT>"}``:
PascalCase and no expiry field (the expiry is the JWT's ``exp``).
"""

from __future__ import annotations

from starlette.responses import Response

from arr_prefect.emulator.request import ACCOUNT, Call, RouteSpec, route
from arr_prefect.emulator.wire import JSONResponse

__all__ = ["ROUTES"]


async def _token(call: Call) -> Response:
    with call.lock:
        token = call.emulator.state.issue_token(
            call.account, call.request.headers.get("authorization")
        )
    return JSONResponse({"AccessToken": token})


ROUTES: tuple[RouteSpec, ...] = (route("sts.token", "GET", rf"/accounts/{ACCOUNT}/token", _token),)
