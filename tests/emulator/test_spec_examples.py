"""Every response example of the official 2021-01-01 spec, replayed against the emulator.

The spec (``mr-arr.json`` in Azure/azure-rest-api-specs, stable/2021-01-01) ships examples
for each session operation: CreateSession, GetSession, UpdateSession, StopSession and
ListSessions, one response per documented status. The cases below restate each one in
this project's own words (status, field names and JSON types, headers) and provoke that
status from the emulator. Where the emulator deliberately differs from an example, the
case says so and follows the recorded exchange with the live service (ARR_API.md §4):

- no ``"error": null`` (the recording has no ``error`` key when there is none);
- ``creationTime`` with 7 fractional digits and ``+00:00`` (the recording), not ``.111Z``;
- 401/403/404/429, which the examples show with headers only, carry the error body too
  (see ``arr_prefect.emulator.wire.error_response`` for why).

The conversion examples (CreateConversion, GetConversion, ListConversions) describe an
API the emulator does not serve; the last test pins that it answers them with the
service's JSON 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from tests.emulator._support import ACCOUNT, OTHER_ACCOUNT, OTHER_KEY, V2021, bearer

BASE = f"/accounts/{ACCOUNT}/sessions"
SID = "contoso-session-c2b8ac1d-9494-4852-a59c-8c28813adc28"
"""The session id the examples use."""

# A correlation vector: the examples' MS-CV is 22 base64 characters; the service appends
# a ".N" extension as the vector grows.
MS_CV = re.compile(r"^[A-Za-z0-9+/]{22}(\.[0-9]+)*$")

# --- the shapes, as the spec's definitions and examples give them -------------------------


def _date_time(value: object) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None


def _port(value: object) -> bool:
    return isinstance(value, int) and 49152 <= value <= 65534


SESSION_FIELDS: dict[str, Callable[[object], bool]] = {
    "id": lambda v: v == SID,
    "creationTime": _date_time,
    "arrInspectorPort": _port,
    "handshakePort": _port,
    "elapsedTimeMinutes": lambda v: isinstance(v, int) and v >= 0,
    "hostname": lambda v: (
        isinstance(v, str) and v.endswith(".remoterenderingvm.westus2.mixedreality.azure.com")
    ),
    "maxLeaseTimeMinutes": lambda v: isinstance(v, int),
    "size": lambda v: v in ("Standard", "Premium"),
    "status": lambda v: v in ("Error", "Expired", "Starting", "Ready", "Stopped"),
    "teraflops": lambda v: isinstance(v, float),
}
"""session_properties: every field the examples show, with its JSON type."""

STARTING = ("id", "creationTime", "maxLeaseTimeMinutes", "size", "status", "elapsedTimeMinutes")
"""CreateSession 201/200: a Starting session has no host, ports or teraflops yet. The
examples also leave out ``elapsedTimeMinutes``; the emulator sends 0, a value the schema
defines (read-only, "in the 'Ready' state") and a client reading it can rely on."""
READY = tuple(SESSION_FIELDS)
"""GetSession 200, UpdateSession 200, ListSessions 200: a Ready session, every field."""


@dataclass(frozen=True)
class Example:
    """One response example: what to send, and what comes back."""

    operation: str
    status: int
    provoke: str
    """How the emulator is brought to answer this status (a key of PROVOKE)."""
    fields: tuple[str, ...] = ()
    """Properties fields the body has (empty: an error body or none)."""
    values: dict[str, object] = field(default_factory=dict)
    headers: tuple[str, ...] = ("MS-CV",)
    error_code: str | None = None
    """The example's error.code, where it gives one."""


REQUESTS: dict[str, tuple[str, str, dict[str, object] | None]] = {
    "CreateSession": ("PUT", f"{BASE}/{SID}", {"maxLeaseTimeMinutes": 60, "size": "Standard"}),
    "GetSession": ("GET", f"{BASE}/{SID}", None),
    "UpdateSession": ("PATCH", f"{BASE}/{SID}", {"maxLeaseTimeMinutes": 72}),
    "StopSession": ("POST", f"{BASE}/{SID}/:stop", None),
    "ListSessions": ("GET", BASE, None),
}
"""The example's request (the examples' account becomes the emulator's)."""

ERRORS_EVERYWHERE = [
    ("401", "no-token", ("MS-CV", "WWW-Authenticate"), "Unauthorized"),
    ("403", "other-account", ("MS-CV",), "Forbidden"),
    ("429", "throttle", ("MS-CV", "Retry-After"), "TooManyRequests"),
    ("500", "server-error", ("MS-CV",), "InternalServerError"),
]

EXAMPLES = [
    Example("CreateSession", 201, "nothing", STARTING, {"maxLeaseTimeMinutes": 60}),
    Example("CreateSession", 200, "same-put", STARTING, {"maxLeaseTimeMinutes": 60}),
    Example("CreateSession", 400, "bad-body", error_code="BadRequest"),
    Example("CreateSession", 409, "other-settings", error_code="Conflict"),
    Example("GetSession", 200, "ready", READY, {"status": "Ready", "maxLeaseTimeMinutes": 60}),
    Example("GetSession", 404, "no-session", error_code="NotFound"),
    Example("UpdateSession", 200, "ready", READY, {"status": "Ready", "maxLeaseTimeMinutes": 72}),
    Example("UpdateSession", 404, "no-session", error_code="NotFound"),
    Example("UpdateSession", 422, "longer-lease", error_code="UnprocessableEntity"),
    Example("StopSession", 204, "ready"),
    Example("StopSession", 404, "no-session", error_code="NotFound"),
    Example("ListSessions", 200, "ready", ("sessions",)),
] + [
    Example(operation, int(status), provoke, headers=headers, error_code=code)
    for operation in REQUESTS
    for status, provoke, headers, code in ERRORS_EVERYWHERE
]


async def _provoke(
    how: str, client: httpx.AsyncClient, emu: Emulator, clock: VirtualClock
) -> dict[str, str]:
    """Bring the emulator to the state the example needs; the headers to send."""
    auth = await bearer(client)
    put_body = {"maxLeaseTimeMinutes": 60, "size": "Standard"}
    if how in ("same-put", "other-settings", "ready", "longer-lease"):
        created = await client.put(f"{BASE}/{SID}", params=V2021, json=put_body, headers=auth)
        assert created.status_code == 201
    if how in ("ready", "longer-lease"):
        clock.advance(30 + 10 * 60)  # start-up, then 10 minutes Ready (the examples' elapsed)
    if how == "longer-lease":
        emu.state.extend_v2021(ACCOUNT, SID, 120)
    if how == "no-token":
        return {}
    if how == "other-account":
        return await bearer(client, OTHER_ACCOUNT, OTHER_KEY)
    if how == "throttle":
        emu.faults.add(kind="throttle", route="v2021.*", retry_after=15)
    if how == "server-error":
        emu.faults.add(kind="server_error", route="v2021.*", status=500)
    return auth


def _body_for(example: Example, body: dict[str, object] | None) -> dict[str, object] | None:
    if example.provoke == "bad-body":
        return {"maxLeaseTimeMinutes": -4, "size": "Standard"}
    if example.provoke == "other-settings":
        return {"maxLeaseTimeMinutes": 30, "size": "Standard"}
    return body


@pytest.mark.parametrize(
    "example",
    [pytest.param(e, id=f"{e.operation}-{e.status}-{e.provoke}") for e in EXAMPLES],
)
async def test_spec_example(
    example: Example, client: httpx.AsyncClient, emu: Emulator, clock: VirtualClock
) -> None:
    """The emulator answers the example's status, with its fields, types and headers."""
    headers = await _provoke(example.provoke, client, emu, clock)
    method, path, body = REQUESTS[example.operation]
    response = await client.request(
        method, path, params=V2021, json=_body_for(example, body), headers=headers
    )
    assert response.status_code == example.status, response.text
    for name in example.headers:
        assert name in response.headers, name
    assert MS_CV.match(response.headers["MS-CV"])
    if "WWW-Authenticate" in example.headers:
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    if "Retry-After" in example.headers:
        assert response.headers["Retry-After"] == "15"  # an integer, as the spec types it
    if example.status == 204:
        assert response.content == b""
        return
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    if example.error_code is not None:
        # error_response: {"error": {"code": str, "message": str}}, nothing else required.
        assert set(payload) == {"error"}
        assert set(payload["error"]) >= {"code", "message"}
        assert payload["error"]["code"] == example.error_code
        assert isinstance(payload["error"]["message"], str)
        return
    sessions = payload["sessions"] if example.operation == "ListSessions" else [payload]
    if example.operation == "ListSessions":
        assert set(payload) == {"sessions"}  # one page: no @nextLink
        assert len(sessions) == 1
        expected_fields: tuple[str, ...] = READY
    else:
        expected_fields = example.fields
    for session in sessions:
        assert set(session) == set(expected_fields)
        for name, value in session.items():
            assert SESSION_FIELDS[name](value), (name, value)
        for name, value in example.values.items():
            assert session[name] == value


async def test_update_example_under_the_preview_api_version(
    client: httpx.AsyncClient, emu: Emulator, clock: VirtualClock
) -> None:
    """The spec's UpdateSession example is written against 2021-01-01-preview: it is served."""
    auth = await _provoke("ready", client, emu, clock)
    response = await client.patch(
        f"{BASE}/{SID}",
        params={"api-version": "2021-01-01-preview"},
        json={"maxLeaseTimeMinutes": 72},
        headers=auth,
    )
    assert (response.status_code, response.json()["maxLeaseTimeMinutes"]) == (200, 72)
    assert response.headers["api-supported-versions"] == "2021-01-01-preview, 2021-01-01"


async def test_stopped_session_reads_as_recorded(
    client: httpx.AsyncClient, emu: Emulator, clock: VirtualClock
) -> None:
    """After :stop, GET has no hostname or ports (the recording), though teraflops stays."""
    auth = await _provoke("ready", client, emu, clock)
    await client.post(f"{BASE}/{SID}/:stop", params=V2021, headers=auth)
    body = (await client.get(f"{BASE}/{SID}", params=V2021, headers=auth)).json()
    assert body["status"] == "Stopped"
    assert set(body) == {
        "id",
        "creationTime",
        "size",
        "status",
        "maxLeaseTimeMinutes",
        "elapsedTimeMinutes",
        "teraflops",
    }


async def test_creation_time_is_written_as_recorded(
    client: httpx.AsyncClient, emu: Emulator, clock: VirtualClock
) -> None:
    """creationTime: 7 fractional digits and +00:00, like the recorded answers."""
    clock.advance(0.25)
    auth = await bearer(client)
    created = await client.put(
        f"{BASE}/{SID}",
        params=V2021,
        json={"maxLeaseTimeMinutes": 60, "size": "Standard"},
        headers=auth,
    )
    assert created.json()["creationTime"] == "2023-11-14T22:13:20.2500000+00:00"


async def test_no_token_and_no_api_version_is_a_401(client: httpx.AsyncClient) -> None:
    """The service authenticates before it reads the query: no token, no api-version -> 401."""
    response = await client.get(f"{BASE}/{SID}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    auth = await bearer(client)
    missing = await client.get(f"{BASE}/{SID}", headers=auth)
    assert (missing.status_code, missing.json()["error"]["code"]) == (
        400,
        "MissingApiVersionParameter",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("PUT", f"/accounts/{ACCOUNT}/conversions/c1", id="CreateConversion"),
        pytest.param("GET", f"/accounts/{ACCOUNT}/conversions/c1", id="GetConversion"),
        pytest.param("GET", f"/accounts/{ACCOUNT}/conversions", id="ListConversions"),
    ],
)
async def test_conversion_examples_are_not_emulated(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """Conversions are outside the emulator: the service's JSON 404, with MS-CV."""
    response = await client.request(method, path, params=V2021)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
    assert MS_CV.match(response.headers["MS-CV"])
