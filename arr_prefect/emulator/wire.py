"""What every answer of the emulated service looks like on the wire.

- The Content-Type is ``application/json; charset=utf-8``, as the service sent it.
- Every answer carries a fresh ``MS-CV`` (correlation vector) and the service's other
  headers (:data:`SERVICE_HEADERS`).
- Errors are ``{"error": {"code", "message"}}`` (:func:`error_response`); an injected
  fault answers 429 with ``Retry-After`` or a 5xx (:func:`fault_response`).
- A dropped connection starts a 200 and breaks off mid-body (:class:`DroppedResponse`).
"""

from __future__ import annotations

import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from arr_prefect.emulator.faults import FaultAction

__all__ = [
    "API_VERSION_2021",
    "SERVICE_HEADERS",
    "SUPPORTED_API_VERSIONS",
    "ClientGoneResponse",
    "DroppedResponse",
    "EmulatedConnectionDrop",
    "JSONResponse",
    "add_service_headers",
    "error_response",
    "fault_response",
    "json_bytes",
    "new_correlation_vector",
]

API_VERSION_2021 = "2021-01-01"
SUPPORTED_API_VERSIONS = ("2021-01-01-preview", API_VERSION_2021)
"""What ``?api-version=`` may say on the session API (and the ``api-supported-versions``
header lists). The preview shares the stable version's session shapes; the spec's own
update example is written against it."""

_SERVER_ERROR_CODES = {
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def json_bytes(content: Any) -> bytes:
    """``content`` as the emulator sends JSON: compact, UTF-8, Starlette's own settings."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


class JSONResponse(_StarletteJSONResponse):
    """JSON with the service's exact Content-Type, ``application/json; charset=utf-8``."""

    media_type = "application/json; charset=utf-8"

    def __init__(
        self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        if headers is not None:
            super().__init__(content, status_code, headers)
            return
        self._set_body(self.render(content), status_code)

    @classmethod
    def of_bytes(cls, body: bytes, status_code: int = 200) -> JSONResponse:
        """An answer whose JSON is already serialized (the session lists keep theirs so)."""
        response = cls.__new__(cls)
        response._set_body(body, status_code)
        return response

    def _set_body(self, body: bytes, status_code: int) -> None:
        # Starlette's own steps for an answer with no extra headers (render, then the two
        # headers), without its generic header merging: every GET passes here.
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", _JSON_CONTENT_TYPE),
        ]


_JSON_CONTENT_TYPE = JSONResponse.media_type.encode("latin-1")


class EmulatedConnectionDrop(httpx.RemoteProtocolError):
    """Raised by the app, after the response has started, to break the connection.

    Subclassing :class:`httpx.RemoteProtocolError` makes an in-process client
    (``httpx.ASGITransport``) see exactly what a real client sees when uvicorn aborts
    the connection mid-response: an :class:`httpx.TransportError`.
    """


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


def fault_response(action: FaultAction) -> Response:
    """The answer of an injected ``throttle`` (429 + ``Retry-After``) or ``server_error``."""
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


class DroppedResponse(Response):
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


class ClientGoneResponse(JSONResponse):
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
