"""Hostile input: every answer stays the service's JSON error, never a 500 or a traceback."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator.request import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_MODEL_CHARS,
    MAX_MODELS,
    json_depth,
)
from tests.emulator._support import (
    ACCOUNT,
    MS_CV,
    V2021,
    asgi_request,
    v1_create,
    v2021_put,
)

V1 = f"/v1/accounts/{ACCOUNT}/sessions"
V2 = f"/accounts/{ACCOUNT}/sessions"


def _assert_service_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert MS_CV.match(response.headers["MS-CV"])
    error = response.json()["error"]
    assert isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


DEEP = [
    pytest.param("[" * 1000 + "]" * 1000, id="array-1000"),
    pytest.param('{"a":' * 1000 + "1" + "}" * 1000, id="object-1000"),
    pytest.param("{'a':" * 1000 + "'x'" + "}" * 1000, id="single-quoted-1000"),
    pytest.param('{"maxLeaseTime": "4:0:0", "models": ' + "[" * 60_000, id="unclosed-60000"),
    pytest.param("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), id="just-too-deep"),
]


@pytest.mark.parametrize("body", DEEP)
async def test_deep_nesting_is_a_400_on_every_body(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    emu: Emulator,
    body: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nesting past the depth limit answers 400 on every route that reads a body, no traceback."""
    sid = await v1_create(client, auth)
    assert (await v2021_put(client, auth, "deep")).status_code == 201
    before = emu.ledger()
    headers = auth | {"Content-Type": "application/json"}
    calls = [
        ("POST", f"{V1}/create", {}),
        ("PATCH", f"{V1}/{sid}", {}),
        ("PUT", f"{V2}/other", V2021),
        ("PATCH", f"{V2}/deep", V2021),
        ("POST", "/_emulator/faults", {}),
        ("POST", "/_emulator/clock/advance", {}),
    ]
    for method, path, params in calls:
        response = await client.request(method, path, params=params, content=body, headers=headers)
        _assert_service_error(response, 400, "BadRequest")
    _no_tracebacks(caplog)
    assert emu.ledger() == before
    assert emu.faults.pending() == []


async def test_nesting_within_the_limit_still_parses(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """A body nested up to the limit is read as before (the refusal is not of all nesting)."""
    models = json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
    body = {"maxLeaseTime": "1:0:0", "models": models, "size": "standard"}
    assert (await client.post(f"{V1}/create", json=body, headers=auth)).status_code == 202


def test_json_depth_ignores_brackets_in_strings() -> None:
    """Brackets inside either kind of quotes do not count; escaped quotes do not end a string."""
    assert json_depth('{"a": "[[[[", "b": [1]}') == 2
    assert json_depth("{'a': '{{{', \"b\\\"[[\": 1}") == 1


async def test_forged_token_nesting_deep_is_a_401(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A bearer token whose header or claims nest a thousand levels is just an invalid token."""
    import base64

    deep = base64.urlsafe_b64encode(("[" * 5000 + "]" * 5000).encode()).decode().rstrip("=")
    for token in (f"{deep}.{deep}.c2ln", f"e30.{deep}.c2ln"):
        response = await client.get(V1, headers={"Authorization": f"Bearer {token}"})
        _assert_service_error(response, 401, "Unauthorized")
    _no_tracebacks(caplog)


async def test_skip_token_nesting_deep_is_a_400(
    client: httpx.AsyncClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A skipToken decoding to deeply nested JSON is an invalid skipToken."""
    import base64

    token = base64.urlsafe_b64encode(("[" * 5000).encode()).decode()
    response = await client.get(V2, params=V2021 | {"skipToken": token}, headers=auth)
    _assert_service_error(response, 400, "BadRequest")
    _no_tracebacks(caplog)


# --- sizes --------------------------------------------------------------------------------


async def test_huge_body_is_a_413_and_nothing_is_stored(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator
) -> None:
    """A 10 MB `models` string answers 413 and makes no session."""
    body = {"maxLeaseTime": "4:0:0", "models": ["x" * 10_000_000], "size": "standard"}
    response = await client.post(f"{V1}/create", json=body, headers=auth)
    _assert_service_error(response, 413, "PayloadTooLarge")
    assert emu.ledger()["sessions"] == []


@pytest.mark.parametrize(
    "models",
    [
        pytest.param(["https://a.blob.core.windows.net/c"] * (MAX_MODELS + 1), id="too-many"),
        pytest.param(["x" * (MAX_MODEL_CHARS + 1)], id="too-long"),
        pytest.param([{"url": "x" * MAX_MODEL_CHARS}], id="object-too-long"),
    ],
)
async def test_stored_models_are_bounded(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, models: list[object]
) -> None:
    """models beyond the stored-field bounds are a 400, inside the body limit; nothing is made."""
    body = {"maxLeaseTime": "4:0:0", "models": models, "size": "standard"}
    response = await client.post(f"{V1}/create", json=body, headers=auth)
    _assert_service_error(response, 400, "BadRequest")
    assert emu.ledger()["sessions"] == []
    at_limit = {**body, "models": ["x" * MAX_MODEL_CHARS] * MAX_MODELS}
    assert (await client.post(f"{V1}/create", json=at_limit, headers=auth)).status_code == 413
    within = {**body, "models": ["x" * MAX_MODEL_CHARS] * 4}
    assert (await client.post(f"{V1}/create", json=within, headers=auth)).status_code == 202


async def test_body_of_exactly_the_limit_is_read(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """The limit is inclusive: a body of MAX_BODY_BYTES is parsed (and refused for its content)."""
    body = b'{"maxLeaseTime": "4:0:0", "size": "standard", "pad": "'
    body += b"x" * (MAX_BODY_BYTES - len(body) - 2) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = await client.post(f"{V1}/create", content=body, headers=auth)
    assert response.status_code == 202


async def test_streamed_body_over_the_limit_is_a_413(emu: Emulator, auth: dict[str, str]) -> None:
    """A body with no Content-Length is cut off as soon as it passes the limit."""
    chunk = b"[" + b" " * 8191
    status, headers, body = await asgi_request(
        emu.app,
        "POST",
        f"{V1}/create",
        headers=list(auth.items()),
        chunks=[chunk] * (MAX_BODY_BYTES // len(chunk) + 2),
    )
    assert (status, json.loads(body)["error"]["code"]) == (413, "PayloadTooLarge")
    assert headers["connection"] == "close"


async def test_declared_length_over_the_limit_is_a_413_before_auth(
    client: httpx.AsyncClient,
) -> None:
    """Like a front end, a Content-Length over the limit is refused before anything else."""
    response = await client.post(
        f"{V1}/create", content=b"{}", headers={"Content-Length": str(MAX_BODY_BYTES + 1)}
    )
    _assert_service_error(response, 413, "PayloadTooLarge")


# --- paths and methods --------------------------------------------------------------------

SEGMENT_PATHS = [
    "/accounts/{x}/token",
    "/v1/accounts/{x}/sessions/create",
    "/v1/accounts/{a}/sessions/{x}/properties",
    "/v1/accounts/{a}/sessions/{x}",
    "/accounts/{a}/sessions/{x}",
    "/accounts/{a}/sessions/{x}/:stop",
    "/{x}/accounts/{a}/sessions",
    "/_emulator/{x}",
]


@pytest.mark.parametrize("control", ["\n", "\r\n", "\x00", "\t", "\x7f", "\x1b"])
@pytest.mark.parametrize("template", SEGMENT_PATHS)
async def test_control_characters_in_a_path_segment(
    emu: Emulator, template: str, control: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A control character anywhere in the path: 400 JSON with MS-CV, counted in the log."""
    path = template.format(a=ACCOUNT, x=f"ab{control}cd")
    before = sum(sum(c.values()) for c in emu.request_counts().values())
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        status, headers, body = await asgi_request(emu.app, method, path)
        assert status == 400
        assert MS_CV.match(headers["ms-cv"])
        assert json.loads(body)["error"]["code"] == "BadRequest"
    after = sum(sum(c.values()) for c in emu.request_counts().values())
    assert after == before + 5
    _no_tracebacks(caplog)


@pytest.mark.parametrize("control", ["\n", "\r\n"])
async def test_trailing_newline_does_not_reach_a_route(emu: Emulator, control: str) -> None:
    """`/_emulator/health\\n` is not `/_emulator/health` (a regex `$` would say it is)."""
    status, _, _ = await asgi_request(emu.app, "GET", f"/_emulator/health{control}")
    assert status == 400
    assert emu.request_count("admin.health") == 0


async def test_unknown_path_and_wrong_method_are_json_and_logged(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    """The router's own 404 and 405 are the service's JSON errors, counted as route `unknown`."""
    _assert_service_error(await client.get("/nothing/here"), 404, "NotFound")
    wrong = await client.request("OPTIONS", "/_emulator/ledger")
    _assert_service_error(wrong, 405, "MethodNotAllowed")
    assert wrong.headers["Allow"] == "GET"
    assert emu.request_counts()["unknown"] == {"404": 1, "405": 1}


async def test_absolute_form_target_routes_by_its_path(emu: Emulator) -> None:
    """`GET http://host/_emulator/health` is served like `GET /_emulator/health` (RFC 9112)."""
    status, headers, body = await asgi_request(
        emu.app, "GET", "http://remoterendering.westus2.mixedreality.azure.com/_emulator/health"
    )
    assert (status, json.loads(body)["status"]) == (200, "ok")
    assert MS_CV.match(headers["ms-cv"])


async def test_service_headers_on_every_answer(client: httpx.AsyncClient) -> None:
    """nosniff and no-cache ride on errors and successes alike, as the service sends them."""
    for response in (await client.get("/_emulator/health"), await client.get("/nothing")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["Pragma"] == "no-cache"


# --- disconnects --------------------------------------------------------------------------


async def test_client_hanging_up_mid_body_is_no_error(
    emu: Emulator, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A client gone mid-body is counted as `disconnected`: no 500, no traceback, no session."""
    await asgi_request(
        emu.app,
        "POST",
        f"{V1}/create",
        headers=[*auth.items(), ("content-length", "300")],
        chunks=[b'{"maxLeaseTime": "4:0:0", '],
        hang_up=True,
    )
    assert emu.request_counts()["v1.create"] == {"disconnected": 1}
    assert emu.ledger()["sessions"] == []
    _no_tracebacks(caplog)


# --- admin input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"kind": "throttle", "route": ["v1.*"]}, id="route-list"),
        pytest.param({"kind": "throttle", "session_id": {"a": 1}}, id="session-object"),
        pytest.param({"kind": "throttle", "times": "2"}, id="times-string"),
        pytest.param({"kind": "slow", "seconds": float("inf")}, id="seconds-infinite"),
        pytest.param({"kind": "throttle", "retry_after": 1.5}, id="retry-after-float"),
        pytest.param({"kind": "session_error", "reason": "x" * 5000}, id="reason-long"),
        pytest.param({"random": {"p_throttle": "0.5"}}, id="probability-string"),
        pytest.param({"random": {"retry_after": float("inf")}}, id="random-retry-infinite"),
        pytest.param({"random": {"seed": [1]}}, id="seed-list"),
    ],
)
async def test_ill_typed_faults_are_refused_up_front(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, fault: dict[str, object]
) -> None:
    """A fault of the wrong shape is a 400 now, not a 500 on every later request."""
    response = await client.post("/_emulator/faults", content=json.dumps(fault))
    _assert_service_error(response, 400, "BadRequest")
    assert emu.faults.pending() == []
    assert (await client.get(V1, headers=auth)).status_code == 200


@pytest.mark.parametrize("seconds", ["Infinity", "NaN", "1e300", "-0.5"])
async def test_clock_advance_refuses_what_would_break_the_clock(
    client: httpx.AsyncClient, clock: VirtualClock, seconds: str
) -> None:
    """Infinity, NaN and centuries are refused; the clock stays where it was."""
    before = clock.time()
    response = await client.post("/_emulator/clock/advance", content=f'{{"seconds": {seconds}}}')
    _assert_service_error(response, 400, "BadRequest")
    assert clock.time() == before
    assert (await client.get("/_emulator/ledger")).status_code == 200


@pytest.mark.parametrize(
    "lease",
    [
        pytest.param("\u0664:\u0660:\u0660", id="arabic-indic"),
        pytest.param("\uff14:0:0", id="fullwidth"),
        pytest.param("\u0967\u0968:00:00", id="devanagari"),
    ],
)
async def test_non_ascii_digits_are_not_a_lease(
    client: httpx.AsyncClient, auth: dict[str, str], emu: Emulator, lease: str
) -> None:
    """A v1 lease in non-ASCII digits is a 400 on create and extend (.NET reads ASCII only)."""
    body = {"maxLeaseTime": lease, "models": [], "size": "standard"}
    _assert_service_error(await client.post(f"{V1}/create", json=body, headers=auth), 400)
    sid = await v1_create(client, auth, lease="1:0:0")
    patched = await client.patch(f"{V1}/{sid}", json={"maxLeaseTime": lease}, headers=auth)
    _assert_service_error(patched, 400)
    assert [e["max_lease_seconds"] for e in emu.ledger()["sessions"]] == [3600.0]
