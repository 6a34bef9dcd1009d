"""API dialects: the registry, each version's parsing, and a third version added by a test."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, get_args

import httpx
import pytest

from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.dialects import DIALECTS, Dialect, SessionCalls, dialect_for
from arr_prefect.dialects.base import STATUS, STR, WireField, function, wire_field
from arr_prefect.errors import ConfigurationError
from arr_prefect.models import ApiVersion, Session, SessionSize, SessionStatus
from tests.unit.test_client import FakeArr, make_client

V1 = DIALECTS["v1"]
V2021 = DIALECTS["2021-01-01"]

# The seed's properties answer, verbatim (ARR_API.md §3).
SEED_V1_PROPERTIES: dict[str, Any] = {
    "message": None,
    "sessionElapsedTime": "00:00:01",
    "sessionHostname": "5018fee8-817e-4366-9179-556af79a4240.remoterenderingvm.westeurope"
    ".mixedreality.azure.com",
    "sessionId": "e13d2c44-63e0-4591-991e-f9e05e599a93",
    "sessionMaxLeaseTime": "04:00:00",
    "sessionStatus": "Ready",
}

# The 2021-01-01 Ready answer from the recorded exchange (ARR_API.md §4).
V2021_READY: dict[str, Any] = {
    "id": "my-session_1",
    "creationTime": "2022-03-01T10:00:00.000Z",
    "size": "Standard",
    "status": "Ready",
    "maxLeaseTimeMinutes": 15,
    "elapsedTimeMinutes": 2,
    "hostname": "host.remoterendering.westus2.mixedreality.azure.com",
    "handshakePort": 50001,
    "arrInspectorPort": 50000,
    "teraflops": 8.1,
    "error": None,
}


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def v1_item(sid: str, lease: str, elapsed: str, **extra: Any) -> dict[str, Any]:
    return {
        "message": None,
        "sessionElapsedTime": elapsed,
        "sessionHostname": f"{sid}.example",
        "sessionId": sid,
        "sessionMaxLeaseTime": lease,
        "sessionSize": "standard",
        "sessionStatus": "Ready",
        **extra,
    }


class TestRegistry:
    def test_one_dialect_per_api_version_settings_accept(self) -> None:
        """Every version settings accept has a dialect, and every dialect is accepted."""
        assert set(DIALECTS) == set(get_args(ApiVersion))
        assert all(name == dialect.api_version for name, dialect in DIALECTS.items())

    @pytest.mark.parametrize("api_version", [pytest.param(v, id=v) for v in get_args(ApiVersion)])
    def test_client_holds_its_versions_dialect(self, api_version: str) -> None:
        """ArrClient.dialect is the registry's dialect for its settings' api_version."""
        fake = FakeArr(VirtualClock(start=0.0, autojump=True))
        assert make_client(fake, api_version).dialect is DIALECTS[api_version]

    def test_unknown_version_is_a_configuration_error(self) -> None:
        """dialect_for names the known versions when asked for another."""
        with pytest.raises(ConfigurationError, match="'v1', '2021-01-01'"):
            dialect_for("2019-07-01")

    @pytest.mark.parametrize(
        ("api_version", "chooses", "stop"),
        [
            pytest.param("v1", False, ("DELETE", ("s1",)), id="v1"),
            pytest.param("2021-01-01", True, ("POST", ("s1", ":stop")), id="2021"),
        ],
    )
    def test_capabilities(
        self, api_version: str, chooses: bool, stop: tuple[str, tuple[str, ...]]
    ) -> None:
        """What flows and the CLI ask instead of comparing version strings."""
        dialect = dialect_for(api_version)
        assert dialect.client_chooses_session_id is chooses
        assert dialect.stop_request("s1") == stop

    @pytest.mark.parametrize(
        ("api_version", "wire"),
        [
            pytest.param("v1", "standard", id="v1"),
            pytest.param("2021-01-01", "Standard", id="2021"),
        ],
    )
    def test_size_spelling(self, api_version: str, wire: str) -> None:
        """v1 sends sizes lower-case, 2021-01-01 capitalised."""
        assert dialect_for(api_version).size_on_wire(SessionSize.STANDARD) == wire


class TestV1Parsing:
    def test_seed_body(self) -> None:
        """The seed's v1 properties answer becomes a Ready session with its lease and host."""
        session = V1.parse_session(body(SEED_V1_PROPERTIES))
        assert session.id == "e13d2c44-63e0-4591-991e-f9e05e599a93"
        assert session.status is SessionStatus.READY
        assert session.hostname == SEED_V1_PROPERTIES["sessionHostname"]
        assert session.max_lease == timedelta(hours=4)
        assert session.elapsed == timedelta(seconds=1)
        assert session.remaining == timedelta(hours=4) - timedelta(seconds=1)
        assert session.message is None
        assert session.size is None

    def test_error_with_message_and_later_fields(self) -> None:
        """An Error session keeps the service's message; later releases' ports are read."""
        session = V1.parse_session(
            body(
                {
                    "message": "No capacity in region",
                    "sessionElapsedTime": "00:00:00",
                    "sessionHostname": "",
                    "sessionId": "d31bddca-dab7-498e-9bc9-7594bc12862f",
                    "sessionMaxLeaseTime": "4:0:0",
                    "sessionSize": "premium",
                    "sessionStatus": "Error",
                    "handshakePort": 50001,
                    "arrInspectorPort": 50000,
                }
            )
        )
        assert session.status is SessionStatus.ERROR
        assert session.message == "No capacity in region"
        assert session.hostname is None
        assert session.size is SessionSize.PREMIUM
        assert (session.handshake_port, session.arr_inspector_port) == (50001, 50000)

    def test_list_page_with_odd_timespans(self) -> None:
        """A page reads every TimeSpan spelling, case-folded statuses and sizes, in order."""
        items = [
            v1_item("a", "1.02:30:00", "0:0:5"),
            v1_item("b", "4:0:0", "00:00:00.1234567", sessionStatus="starting"),
            v1_item("c", " 04:00:00 ", "23:59:59", sessionSize=" Premium ", sessionHostname=""),
            v1_item("d", "", "", sessionSize=None),
        ]
        sessions, next_link = V1.parse_page(body({"sessions": items}))
        assert next_link is None
        assert [s.id for s in sessions] == ["a", "b", "c", "d"]
        assert [s.max_lease for s in sessions] == [
            timedelta(days=1, hours=2, minutes=30),
            timedelta(hours=4),
            timedelta(hours=4),
            None,
        ]
        assert [s.elapsed for s in sessions] == [
            timedelta(seconds=5),
            timedelta(microseconds=123456),
            timedelta(hours=23, minutes=59, seconds=59),
            None,
        ]
        assert [s.status for s in sessions] == [SessionStatus.READY, SessionStatus.STARTING] + [
            SessionStatus.READY
        ] * 2
        assert [s.size for s in sessions] == [SessionSize.STANDARD] * 2 + [
            SessionSize.PREMIUM,
            None,
        ]
        assert sessions[2].hostname is None

    def test_page_is_what_each_item_parses_to(self) -> None:
        """Parsing a page gives the sessions each item's own answer gives."""
        items = [v1_item(f"s{i}", f"{i % 3}:0:{i % 60}", f"0:{i % 60}:0") for i in range(1, 50)]
        sessions, _ = V1.parse_page(body({"sessions": items}))
        assert sessions == [V1.parse_session(body(item)) for item in items]
        assert all(type(s) is Session for s in sessions)


class TestV2021Parsing:
    def test_ready_body(self) -> None:
        """The recorded Ready answer keeps ports, teraflops, minutes and time."""
        session = V2021.parse_session(body(V2021_READY))
        assert session.id == "my-session_1"
        assert session.status is SessionStatus.READY
        assert session.size is SessionSize.STANDARD
        assert session.max_lease == timedelta(minutes=15)
        assert session.elapsed == timedelta(minutes=2)
        assert session.hostname == V2021_READY["hostname"]
        assert (session.handshake_port, session.arr_inspector_port) == (50001, 50000)
        assert session.teraflops is not None
        assert math.isclose(session.teraflops, 8.1)
        assert session.created_at == datetime(2022, 3, 1, 10, 0, tzinfo=UTC)
        assert session.message is None
        assert session.error_code is None

    def test_starting_and_error(self) -> None:
        """A Starting body has no host yet; an Error body's code and message are kept."""
        starting = V2021.parse_session(body({"id": "s1", "status": "Starting", "size": "Premium"}))
        assert starting.hostname is None
        assert starting.max_lease is None
        assert starting.remaining is None
        failed = V2021.parse_session(
            body({"id": "s1", "status": "Error", "error": {"code": "NoCapacity", "message": "x"}})
        )
        assert (failed.error_code, failed.message) == ("NoCapacity", "x")

    def test_service_time_with_ticks(self) -> None:
        """creationTime with 7 fractional digits and +00:00 (as the service wrote it) reads."""
        session = V2021.parse_session(
            body(
                {"id": "s1", "status": "Ready", "creationTime": "2022-03-01T10:00:00.1234560+00:00"}
            )
        )
        assert session.created_at == datetime(2022, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
        unknown = V2021.parse_session(body({"id": "s1", "status": "Ready", "creationTime": ""}))
        assert unknown.created_at is None

    def test_list_page_and_next_link(self) -> None:
        """A page's sessions and its @nextLink; items without error or host read as None."""
        items = [
            {**V2021_READY, "id": "a"},
            {"id": "b", "status": "starting", "size": "premium", "maxLeaseTimeMinutes": 1440},
        ]
        sessions, next_link = V2021.parse_page(
            body({"sessions": items, "@nextLink": "https://arr.test/next"})
        )
        assert next_link == "https://arr.test/next"
        assert [(s.id, s.status, s.size) for s in sessions] == [
            ("a", SessionStatus.READY, SessionSize.STANDARD),
            ("b", SessionStatus.STARTING, SessionSize.PREMIUM),
        ]
        assert sessions[1].max_lease == timedelta(hours=24)
        assert (sessions[1].hostname, sessions[1].message) == (None, None)


@pytest.mark.parametrize(
    ("dialect", "answer"),
    [
        pytest.param(V1, {"sessions": None}, id="v1-null-sessions"),
        pytest.param(V1, {}, id="v1-no-sessions"),
        pytest.param(V2021, {"sessions": [], "@nextLink": None}, id="2021-empty"),
    ],
)
def test_empty_pages(dialect: Dialect, answer: dict[str, Any]) -> None:
    """A page without sessions (null, absent or empty) is an empty list."""
    assert dialect.parse_page(body(answer)) == ([], None)


@pytest.mark.parametrize(
    ("dialect", "content"),
    [
        pytest.param(V1, b"<html>bad gateway</html>", id="not-json"),
        pytest.param(V1, body([]), id="not-an-object"),
        pytest.param(V1, body({"sessions": [v1_item("a", "4h", "0:0:0")]}), id="bad-timespan"),
        pytest.param(V1, body({"sessions": [v1_item("a", "25:0:0", "0:0:0")]}), id="hours-25"),
        pytest.param(
            V1,
            body({"sessions": [v1_item("a", "4:0:0", "0:0:0", sessionStatus="Gone")]}),
            id="unknown-status",
        ),
        pytest.param(V1, body({"sessions": [{"sessionStatus": "Ready"}]}), id="no-id"),
        pytest.param(
            V2021,
            body({"sessions": [{"id": "a", "status": "Ready", "maxLeaseTimeMinutes": "x"}]}),
            id="minutes-not-a-number",
        ),
        pytest.param(
            V2021,
            body({"sessions": [{"id": "a", "status": "Ready", "size": "huge"}]}),
            id="unknown-size",
        ),
        pytest.param(V2021, body({"sessions": "a"}), id="sessions-not-a-list"),
    ],
)
def test_unreadable_pages_are_value_errors(dialect: Dialect, content: bytes) -> None:
    """Whatever cannot be read is a ValueError (which the client reports with the answer)."""
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: the client wraps them all
        dialect.parse_page(content)


# ------------------------------------------------------------------ a third version


class ToyDialect(Dialect):
    """A made-up API version: other paths, other names, leases in seconds, stop by POST."""

    api_version: ClassVar[str] = "toy-2030"
    client_chooses_session_id: ClassVar[bool] = True
    path_prefix: ClassVar[str] = "/toy"
    wire_fields: ClassVar[dict[str, WireField]] = {
        "id": wire_field("name", STR, required=True),
        "status": wire_field("state", STATUS, required=True),
        "max_lease": wire_field(
            "leaseSeconds", function(lambda v: None if v is None else timedelta(seconds=v))
        ),
        "elapsed": wire_field(
            "upSeconds", function(lambda v: None if v is None else timedelta(seconds=v))
        ),
    }

    def stop_request(self, session_id: str) -> tuple[str, tuple[str, ...]]:
        return "POST", (session_id, "end")

    def size_on_wire(self, size: SessionSize) -> str:
        return size.value.upper()

    async def create(
        self,
        calls: SessionCalls,
        *,
        lease: timedelta,
        size: SessionSize,
        models: Sequence[str],
        session_id: str | None,
    ) -> Session:
        sid = session_id or "toy-1"
        payload = {"leaseSeconds": int(lease.total_seconds()), "size": self.size_on_wire(size)}
        response = await calls.call(
            "create session", "PUT", calls.sessions_url(sid), expect=(201,), json=payload
        )
        return calls.session_in("create session", response)

    async def extend(self, calls: SessionCalls, session_id: str, lease: timedelta) -> Session:
        payload = {"leaseSeconds": int(lease.total_seconds())}
        response = await calls.call(
            "extend session", "PATCH", calls.sessions_url(session_id), expect=(200,), json=payload
        )
        return calls.session_in("extend session", response)


class ToyService:
    """The toy API's server: sessions Ready at once, 30 s up, in memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        if request.url.host == "sts.test":
            return httpx.Response(200, json={"AccessToken": "a.b.c"})
        prefix = "/toy/accounts/7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5a/sessions"
        assert path.startswith(prefix), path
        parts = path[len(prefix) :].strip("/").split("/") if path != prefix else []
        if request.method == "GET" and not parts:
            return httpx.Response(200, json={"sessions": list(self.sessions.values())})
        sid = parts[0]
        if request.method == "PUT":
            lease = json.loads(request.content)["leaseSeconds"]
            self.sessions[sid] = {"name": sid, "state": "Ready", "leaseSeconds": lease,
                                  "upSeconds": 30}  # fmt: skip
            return httpx.Response(201, json=self.sessions[sid])
        if request.method == "PATCH":
            self.sessions[sid]["leaseSeconds"] = json.loads(request.content)["leaseSeconds"]
            return httpx.Response(200, json=self.sessions[sid])
        if request.method == "POST" and parts[1:] == ["end"]:
            del self.sessions[sid]
            return httpx.Response(204)
        if request.method == "GET":
            return httpx.Response(200, json=self.sessions[sid])
        return httpx.Response(405)


async def test_a_third_version_is_one_module_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A toy dialect, registered by one line, drives the unchanged client end to end."""
    monkeypatch.setitem(DIALECTS, ToyDialect.api_version, ToyDialect())  # the registry line
    service = ToyService()
    fake = FakeArr(VirtualClock(start=0.0, autojump=True))
    settings = make_client(fake).settings.model_copy(update={"api_version": "toy-2030"})
    async with ArrClient(
        settings, transport=httpx.MockTransport(service.handler), clock=fake.clock
    ) as arr:
        assert arr.dialect.client_chooses_session_id
        created = await arr.create_session(lease=10, session_id="job-7")
        ready = await arr.wait_until_ready(created.id)
        extended = await arr.extend_session_by(created.id, timedelta(minutes=20))
        listed = await arr.list_sessions()
        stopped = await arr.stop_session(created.id)
    assert (created.id, ready.status) == ("job-7", SessionStatus.READY)
    # The lease sent is the total: 30 s already up plus the 20 minutes asked for.
    assert extended.max_lease == timedelta(minutes=20, seconds=30)
    assert [s.id for s in listed] == ["job-7"]
    assert stopped is True
    base = "/toy/accounts/7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5a/sessions"
    assert [c for c in service.calls if c.startswith(("PUT", "PATCH", "POST"))] == [
        f"PUT {base}/job-7",
        f"PATCH {base}/job-7",
        f"POST {base}/job-7/end",
    ]
