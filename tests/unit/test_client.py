"""The async session client against a scripted service (httpx.MockTransport), both APIs.

Time is a VirtualClock with autojump, so back-off and polling sleeps take no real time and
the clock's reading says exactly how long the client waited.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient, new_session_id
from arr_prefect.clock import VirtualClock
from arr_prefect.errors import (
    ArrError,
    ArrHTTPError,
    ArrTransportError,
    AuthenticationError,
    BadRequestError,
    CreateOutcomeUnknownError,
    InvalidSessionIdError,
    LeaseNotExtendedError,
    RateLimitedError,
    ReadyTimeoutError,
    ServiceError,
    SessionConflictError,
    SessionExpiredError,
    SessionFailedError,
    SessionNotFoundError,
    SessionStoppedError,
)
from arr_prefect.models import Session, SessionSize, SessionStatus, parse_timespan
from arr_prefect.settings import load_settings

ACCOUNT_ID = "7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5a"
ACCOUNT_KEY = "acct-key-SECRET-0123456789"
SID = "e13d2c44-63e0-4591-991e-f9e05e599a93"
V1 = "v1"
V2021 = "2021-01-01"
BOTH = [pytest.param(V1, id="v1"), pytest.param(V2021, id="2021")]
START = 1_700_000_000.0

Reply = Callable[[httpx.Request], httpx.Response]


def make_jwt(exp: float | None, marker: str = "t") -> str:
    """An unsigned JWT with an ``exp`` claim (the client never verifies signatures)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims: dict[str, Any] = {"sub": marker}
    if exp is not None:
        claims["exp"] = exp
    return f"{part({'alg': 'none'})}.{part(claims)}.sig-{marker}"


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """A fresh response per call (a response object cannot be sent twice)."""

    def make(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return make


def drop(exc_type: type[httpx.TransportError] = httpx.ConnectError) -> Reply:
    """A connection that fails with ``exc_type``."""

    def make(request: httpx.Request) -> httpx.Response:
        raise exc_type("connection dropped", request=request)

    return make


class FakeArr:
    """A scripted service: the STS issues 24 h JWTs; session calls answer from queues."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.tokens: list[str] = []
        self.sts: list[Reply] = []
        self._queues: dict[tuple[str, str], list[Reply]] = {}
        self._defaults: dict[tuple[str, str], Reply] = {}
        self._cv = itertools.count(1)
        self.fallback: Reply | None = None

    def on(self, method: str, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answer ``method path`` with ``replies`` in order, then ``then`` forever."""
        self._queues.setdefault((method, path), []).extend(replies)
        if then is not None:
            self._defaults[(method, path)] = then

    def handler(self, request: httpx.Request) -> httpx.Response:
        # A copy: httpx resends the same Request object after a 401, with a new header.
        self.requests.append(
            httpx.Request(
                request.method, request.url, headers=request.headers.copy(), content=request.read()
            )
        )
        if request.url.host == "sts.test":
            if self.sts:
                make = self.sts.pop(0)
            else:
                token = make_jwt(self.clock.time() + 86_400, marker=f"tok{len(self.tokens)}")
                self.tokens.append(token)
                make = reply(200, {"AccessToken": token})
        else:
            key = (request.method, request.url.path)
            queue = self._queues.get(key)
            if queue:
                make = queue.pop(0)
            elif key in self._defaults:
                make = self._defaults[key]
            elif self.fallback is not None:
                make = self.fallback
            else:
                raise AssertionError(f"unexpected request {request.method} {request.url}")
        response = make(request)
        response.headers.setdefault("MS-CV", f"cv-{next(self._cv)}.0")
        return response

    def api(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        """Session API requests (not STS), optionally of one method and path."""
        return [
            r
            for r in self.requests
            if r.url.host == "arr.test"
            and (method is None or r.method == method)
            and (path is None or r.url.path == path)
        ]

    def sts_calls(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == "sts.test"]


def make_client(
    fake: FakeArr, api_version: str = V1, token_cache: TokenCache | None = None, **overrides: Any
) -> ArrClient:
    values: dict[str, Any] = {
        "account_id": ACCOUNT_ID,
        "account_key": ACCOUNT_KEY,
        "service_url": "https://arr.test",
        "sts_url": "https://sts.test",
        "api_version": api_version,
        "max_attempts": 4,
        "backoff_initial": 0.5,
        "backoff_max": 4.0,
        "poll_interval": 5.0,
        "ready_timeout": 60.0,
    }
    values.update(overrides)
    return ArrClient(
        load_settings(_env_file=None, **values),
        transport=httpx.MockTransport(fake.handler),
        clock=fake.clock,
        token_cache=token_cache if token_cache is not None else TokenCache(),
        rng=random.Random(1234),
    )


def sessions_path(api_version: str, *parts: str) -> str:
    base = "/v1" if api_version == V1 else ""
    return f"{base}/accounts/{ACCOUNT_ID}/sessions" + "".join(f"/{p}" for p in parts)


def get_path(api_version: str, sid: str = SID) -> str:
    return (
        sessions_path(api_version, sid, "properties")
        if api_version == V1
        else (sessions_path(api_version, sid))
    )


def v1_props(
    sid: str = SID,
    status: str = "Ready",
    lease: str = "04:00:00",
    elapsed: str = "00:00:01",
    message: str | None = None,
) -> dict[str, Any]:
    return {
        "message": message,
        "sessionElapsedTime": elapsed,
        "sessionHostname": "5018fee8.remoterenderingvm.westeurope.mixedreality.azure.com"
        if status == "Ready"
        else "",
        "sessionId": sid,
        "sessionMaxLeaseTime": lease,
        "sessionSize": "standard",
        "sessionStatus": status,
    }


def v2021_props(
    sid: str = SID,
    status: str = "Ready",
    lease: int = 240,
    elapsed: int = 0,
    message: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sid,
        "creationTime": "2022-03-01T10:00:00Z",
        "size": "Standard",
        "status": status,
        "maxLeaseTimeMinutes": lease,
        "elapsedTimeMinutes": elapsed,
        "error": {"code": "Failed", "message": message} if message else None,
    }
    if status == "Ready":
        body.update(hostname="h.arr.test", handshakePort=50001, arrInspectorPort=50000)
    return body


def props(api_version: str, status: str = "Ready", message: str | None = None) -> dict[str, Any]:
    if api_version == V1:
        return v1_props(status=status, message=message)
    return v2021_props(status=status, message=message)


@pytest.fixture(autouse=True)
def _no_arr_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's ARR_* variables out of every test."""
    for name in list(os.environ):
        if name.upper().startswith("ARR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake() -> FakeArr:
    return FakeArr(VirtualClock(START, autojump=True))


def waited(fake: FakeArr) -> float:
    return fake.clock.time() - START


def assert_no_secrets(error: BaseException, fake: FakeArr) -> None:
    for text in (str(error), repr(error), repr(error.args)):
        assert ACCOUNT_KEY not in text
        for token in fake.tokens:
            assert token not in text
            assert token.split(".")[2] not in text


# ---------------------------------------------------------------------- wire format


class TestWireV1:
    async def test_create(self, fake: FakeArr) -> None:
        """POST .../sessions/create with the seed's body shape, 202 sessionId → Starting."""
        path = sessions_path(V1, "create")
        fake.on(
            "POST", path, reply(202, {"sessionId": SID}, {"Location": f"accounts/x/sessions/{SID}"})
        )
        async with make_client(fake) as arr:
            session = await arr.create_session(lease="4:0:0", size="Standard")
        (request,) = fake.api()
        assert (request.method, str(request.url)) == ("POST", f"https://arr.test{path}")
        body = json.loads(request.content)
        assert set(body) == {"maxLeaseTime", "models", "size"}
        assert (body["models"], body["size"]) == ([], "standard")
        # The lease carries a sub-second fingerprint, so it is 4 h plus less than a second.
        sent = parse_timespan(body["maxLeaseTime"])
        assert timedelta(hours=4) < sent < timedelta(hours=4, seconds=1)
        assert session.id == SID
        assert session.status is SessionStatus.STARTING
        assert session.max_lease == sent
        assert session.size is SessionSize.STANDARD
        assert request.headers["Content-Type"] == "application/json"

    async def test_create_sends_models(self, fake: FakeArr) -> None:
        """Asset containers to preload go in models."""
        fake.on("POST", sessions_path(V1, "create"), reply(202, {"sessionId": SID}))
        async with make_client(fake) as arr:
            await arr.create_session(lease=30, size="premium", models=["https://a/b"])
        body = json.loads(fake.api()[0].content)
        assert (body["models"], body["size"]) == (["https://a/b"], "premium")

    async def test_create_refuses_session_id(self, fake: FakeArr) -> None:
        """v1 chooses IDs itself: passing one is refused before any request."""
        async with make_client(fake) as arr:
            with pytest.raises(ValueError, match="v1 chooses session IDs"):
                await arr.create_session(lease=30, session_id="mine")
        assert fake.requests == []

    async def test_get(self, fake: FakeArr) -> None:
        """GET .../sessions/{id}/properties, no query, parsed into a Session."""
        fake.on("GET", get_path(V1), reply(200, v1_props()))
        async with make_client(fake) as arr:
            session = await arr.get_session(SID)
        (request,) = fake.api()
        assert str(request.url) == f"https://arr.test{get_path(V1)}"
        assert session.status is SessionStatus.READY
        assert session.max_lease == timedelta(hours=4)

    async def test_list(self, fake: FakeArr) -> None:
        """GET .../sessions answers {"sessions": [...]}."""
        fake.on(
            "GET",
            sessions_path(V1),
            reply(200, {"sessions": [v1_props(), v1_props(sid="other", status="Starting")]}),
        )
        async with make_client(fake) as arr:
            sessions = await arr.list_sessions()
        assert [s.id for s in sessions] == [SID, "other"]
        assert str(fake.api()[0].url) == f"https://arr.test{sessions_path(V1)}"

    async def test_extend(self, fake: FakeArr) -> None:
        """PATCH {"maxLeaseTime": "05:00:00"} (200, empty body), then the properties."""
        fake.on("PATCH", sessions_path(V1, SID), reply(200))
        fake.on("GET", get_path(V1), reply(200, v1_props(lease="05:00:00")))
        async with make_client(fake) as arr:
            session = await arr.extend_session(SID, "5:0:0")
        patch, get = fake.api()
        assert (patch.method, str(patch.url)) == (
            "PATCH",
            f"https://arr.test/v1/accounts/{ACCOUNT_ID}/sessions/{SID}",
        )
        assert json.loads(patch.content) == {"maxLeaseTime": "05:00:00"}
        assert get.method == "GET"
        assert session.max_lease == timedelta(hours=5)

    async def test_stop(self, fake: FakeArr) -> None:
        """DELETE .../sessions/{id}, 204 → True."""
        fake.on("DELETE", sessions_path(V1, SID), reply(204))
        async with make_client(fake) as arr:
            assert await arr.stop_session(SID) is True
        (request,) = fake.api()
        assert (request.method, str(request.url)) == (
            "DELETE",
            f"https://arr.test{sessions_path(V1, SID)}",
        )


class TestWire2021:
    async def test_create(self, fake: FakeArr) -> None:
        """PUT .../sessions/{id}?api-version=2021-01-01 with minutes and a capitalised size."""
        path = sessions_path(V2021, "job-1")
        fake.on("PUT", path, reply(201, v2021_props(sid="job-1", status="Starting", lease=15)))
        async with make_client(fake, V2021) as arr:
            session = await arr.create_session(lease=15, session_id="job-1")
        (request,) = fake.api()
        assert (request.method, str(request.url)) == (
            "PUT",
            f"https://arr.test{path}?api-version=2021-01-01",
        )
        assert json.loads(request.content) == {"maxLeaseTimeMinutes": 15, "size": "Standard"}
        assert (session.id, session.status) == ("job-1", SessionStatus.STARTING)
        assert session.hostname is None

    async def test_create_picks_an_id(self, fake: FakeArr) -> None:
        """Without session_id the client picks a fresh, valid one; a partial minute rounds up."""

        def created(request: httpx.Request) -> httpx.Response:
            sid = request.url.path.rsplit("/", 1)[1]
            return httpx.Response(201, json=v2021_props(sid=sid, status="Starting"))

        fake.fallback = created
        async with make_client(fake, V2021) as arr:
            session = await arr.create_session(lease="00:15:30", size="premium")
        (request,) = fake.api("PUT")
        assert request.url.path == sessions_path(V2021, session.id)
        assert session.id.startswith("arr-")
        assert json.loads(request.content) == {"maxLeaseTimeMinutes": 16, "size": "Premium"}

    async def test_get(self, fake: FakeArr) -> None:
        """GET .../sessions/{id}?api-version=2021-01-01."""
        fake.on("GET", get_path(V2021), reply(200, v2021_props()))
        async with make_client(fake, V2021) as arr:
            session = await arr.get_session(SID)
        assert str(fake.api()[0].url) == f"https://arr.test{get_path(V2021)}?api-version=2021-01-01"
        assert session.hostname == "h.arr.test"

    async def test_list_follows_next_link(self, fake: FakeArr) -> None:
        """List follows @nextLink pages (relative or absolute) until there is none."""
        path = sessions_path(V2021)
        fake.on(
            "GET",
            path,
            reply(
                200,
                {
                    "sessions": [v2021_props(sid="a")],
                    "@nextLink": f"{path}?api-version=2021-01-01&page=2",
                },
            ),
            reply(
                200,
                {
                    "sessions": [v2021_props(sid="b")],
                    "@nextLink": f"https://arr.test{path}?api-version=2021-01-01&page=3",
                },
            ),
            reply(200, {"sessions": [v2021_props(sid="c")]}),
        )
        async with make_client(fake, V2021) as arr:
            sessions = await arr.list_sessions()
        assert [s.id for s in sessions] == ["a", "b", "c"]
        assert [str(r.url) for r in fake.api()] == [
            f"https://arr.test{path}?api-version=2021-01-01",
            f"https://arr.test{path}?api-version=2021-01-01&page=2",
            f"https://arr.test{path}?api-version=2021-01-01&page=3",
        ]

    async def test_list_stops_on_a_repeated_next_link(self, fake: FakeArr) -> None:
        """A @nextLink seen before ends the listing instead of looping forever."""
        path = sessions_path(V2021)
        page = {"sessions": [v2021_props(sid="a")], "@nextLink": f"{path}?page=2"}
        fake.on("GET", path, then=reply(200, page))
        async with make_client(fake, V2021) as arr:
            sessions = await arr.list_sessions()
        assert len(fake.api()) == 2
        assert [s.id for s in sessions] == ["a", "a"]

    @pytest.mark.parametrize(
        "link",
        [
            pytest.param("https://evil.test/accounts/x/sessions", id="other-host"),
            pytest.param("http://arr.test/accounts/x/sessions?page=2", id="plain-http"),
            pytest.param("https://arr.test:8443/accounts/x/sessions", id="other-port"),
        ],
    )
    async def test_list_refuses_foreign_next_link(self, fake: FakeArr, link: str) -> None:
        """The token is never sent to a @nextLink on another origin (host, scheme or port)."""
        fake.on("GET", sessions_path(V2021), reply(200, {"sessions": [], "@nextLink": link}))
        async with make_client(fake, V2021) as arr:
            with pytest.raises(ArrTransportError, match="@nextLink"):
                await arr.list_sessions()
        assert len(fake.api()) == 1

    async def test_extend(self, fake: FakeArr) -> None:
        """PATCH {"maxLeaseTimeMinutes": 20} answers the full properties."""
        fake.on("PATCH", sessions_path(V2021, SID), reply(200, v2021_props(lease=20)))
        async with make_client(fake, V2021) as arr:
            session = await arr.extend_session(SID, 20)
        (request,) = fake.api()
        assert str(request.url) == (
            f"https://arr.test{sessions_path(V2021, SID)}?api-version=2021-01-01"
        )
        assert json.loads(request.content) == {"maxLeaseTimeMinutes": 20}
        assert session.max_lease == timedelta(minutes=20)

    async def test_extend_after_applied_retry(self, fake: FakeArr) -> None:
        """A retried PATCH answered 422 is fine when the lease is already what was asked."""
        fake.on(
            "PATCH",
            sessions_path(V2021, SID),
            drop(httpx.ReadError),
            reply(422, {"error": {"code": "Unprocessable", "message": "not greater"}}),
        )
        fake.on("GET", get_path(V2021), reply(200, v2021_props(lease=20)))
        async with make_client(fake, V2021) as arr:
            session = await arr.extend_session(SID, 20)
        assert session.max_lease == timedelta(minutes=20)
        assert len(fake.api("PATCH")) == 2

    async def test_extend_not_greater(self, fake: FakeArr) -> None:
        """A 422 when the lease is still short is a LeaseNotExtendedError."""
        fake.on(
            "PATCH",
            sessions_path(V2021, SID),
            reply(422, {"error": {"code": "Unprocessable", "message": "not greater"}}),
        )
        fake.on("GET", get_path(V2021), reply(200, v2021_props(lease=15)))
        async with make_client(fake, V2021) as arr:
            with pytest.raises(LeaseNotExtendedError, match="not greater"):
                await arr.extend_session(SID, 20)

    async def test_stop(self, fake: FakeArr) -> None:
        """POST .../sessions/{id}/:stop?api-version=2021-01-01 with no body, 204 → True."""
        path = sessions_path(V2021, SID, ":stop")
        fake.on("POST", path, reply(204))
        async with make_client(fake, V2021) as arr:
            assert await arr.stop_session(SID) is True
        (request,) = fake.api()
        assert str(request.url) == f"https://arr.test{path}?api-version=2021-01-01"
        assert request.content == b""


@pytest.mark.parametrize("api_version", BOTH)
async def test_session_calls_carry_the_token(fake: FakeArr, api_version: str) -> None:
    """Every session call sends Authorization: Bearer <AccessToken> and asks for JSON."""
    fake.on("GET", get_path(api_version), then=reply(200, props(api_version)))
    async with make_client(fake, api_version) as arr:
        await arr.get_session(SID)
        await arr.get_session(SID)
    assert len(fake.sts_calls()) == 1
    for request in fake.api():
        assert request.headers["Authorization"] == f"Bearer {fake.tokens[0]}"
        assert request.headers["Accept"] == "application/json"


@pytest.mark.parametrize("api_version", BOTH)
@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param("../x", id="dot-dot"),
        pytest.param("a/b", id="slash"),
        pytest.param("%2F", id="pct"),
    ],
)
async def test_unsafe_session_id_sends_nothing(
    fake: FakeArr, api_version: str, bad_id: str
) -> None:
    """An unsafe session ID is refused before any request, for every operation."""
    async with make_client(fake, api_version) as arr:
        for call in (
            arr.get_session(bad_id),
            arr.stop_session(bad_id),
            arr.extend_session(bad_id, 30),
            arr.wait_until_ready(bad_id),
        ):
            with pytest.raises(InvalidSessionIdError):
                await call
    assert fake.requests == []


def test_new_session_id_is_valid_and_fresh() -> None:
    """new_session_id gives distinct IDs that pass validation."""
    ids = {new_session_id("job") for _ in range(5)}
    assert len(ids) == 5
    assert all(i.startswith("job-") for i in ids)


# ---------------------------------------------------------------------- retries


@pytest.mark.parametrize("api_version", BOTH)
@pytest.mark.parametrize(
    ("failure", "min_wait"),
    [
        pytest.param(drop(httpx.ConnectError), 0.0, id="connect-error"),
        pytest.param(drop(httpx.ReadError), 0.0, id="read-error"),
        pytest.param(reply(500), 0.0, id="500"),
        pytest.param(reply(502), 0.0, id="502"),
        pytest.param(reply(503), 0.0, id="503"),
        pytest.param(reply(429, headers={"Retry-After": "7"}), 7.0, id="429-retry-after"),
        pytest.param(reply(503, headers={"Retry-After": "3"}), 3.0, id="503-retry-after"),
    ],
)
async def test_transient_failures_are_retried(
    fake: FakeArr, api_version: str, failure: Reply, min_wait: float
) -> None:
    """Connection errors, 5xx and 429 are retried after a wait (Retry-After when given)."""
    fake.on("GET", get_path(api_version), failure, failure, reply(200, props(api_version)))
    async with make_client(fake, api_version) as arr:
        session = await arr.get_session(SID)
    assert session.status is SessionStatus.READY
    assert len(fake.api()) == 3
    assert waited(fake) > 0
    assert waited(fake) >= 2 * min_wait


@pytest.mark.parametrize("api_version", BOTH)
@pytest.mark.parametrize(
    ("failure", "error", "min_wait"),
    [
        pytest.param(drop(httpx.ConnectError), ArrTransportError, 0.0, id="connect-error"),
        pytest.param(drop(httpx.ConnectTimeout), ArrTransportError, 0.0, id="connect-timeout"),
        pytest.param(reply(500), ServiceError, 0.0, id="500"),
        pytest.param(reply(502), ServiceError, 0.0, id="502"),
        pytest.param(reply(503), ServiceError, 0.0, id="503"),
        pytest.param(reply(429, headers={"Retry-After": "10"}), RateLimitedError, 10.0, id="429"),
    ],
)
async def test_retries_are_bounded(
    fake: FakeArr,
    api_version: str,
    failure: Reply,
    error: type[ArrError],
    min_wait: float,
) -> None:
    """After max_attempts the failure surfaces as the matching error; no more requests."""
    fake.on("GET", get_path(api_version), then=failure)
    async with make_client(fake, api_version, max_attempts=3) as arr:
        with pytest.raises(error) as info:
            await arr.get_session(SID)
    assert len(fake.api()) == 3
    assert waited(fake) >= 2 * min_wait
    assert "get session" in str(info.value)


async def test_retry_after_is_capped(fake: FakeArr) -> None:
    """A Retry-After beyond retry_after_max waits only retry_after_max."""
    fake.on(
        "GET",
        get_path(V1),
        reply(429, headers={"Retry-After": "3600"}),
        reply(200, v1_props()),
    )
    async with make_client(fake, retry_after_max=60.0) as arr:
        await arr.get_session(SID)
    assert waited(fake) == 60.0


async def test_retry_after_http_date(fake: FakeArr) -> None:
    """Retry-After as an HTTP date is honoured relative to the clock."""
    fake.on(
        "GET",
        get_path(V1),
        # START is 2023-11-14T22:13:20Z; this date is 40 s later.
        reply(429, headers={"Retry-After": "Tue, 14 Nov 2023 22:14:00 GMT"}),
        reply(200, v1_props()),
    )
    async with make_client(fake) as arr:
        await arr.get_session(SID)
    assert waited(fake) == pytest.approx(40.0)


async def test_backoff_grows_and_is_capped(fake: FakeArr) -> None:
    """Without Retry-After the waits are jittered exponential back-off under backoff_max."""
    fake.on("GET", get_path(V1), then=reply(503))
    async with make_client(fake, max_attempts=6, backoff_initial=1.0, backoff_max=4.0) as arr:
        with pytest.raises(ServiceError):
            await arr.get_session(SID)
    # Ceilings 1, 2, 4, 4, 4 with jitter in [0.5, 1]: between 7.5 and 15 seconds.
    assert 7.5 <= waited(fake) <= 15.0


@pytest.mark.parametrize("api_version", BOTH)
@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(400, BadRequestError, id="400"),
        pytest.param(404, SessionNotFoundError, id="404"),
        pytest.param(409, SessionConflictError, id="409"),
    ],
)
async def test_client_errors_are_not_retried(
    fake: FakeArr, api_version: str, status: int, error: type[ArrError]
) -> None:
    """400, 404 and 409 are final: one request, the specific error, no waiting."""
    fake.on(
        "GET",
        get_path(api_version),
        then=reply(status, {"error": {"code": "Nope", "message": "refused"}}),
    )
    async with make_client(fake, api_version) as arr:
        with pytest.raises(error, match="refused"):
            await arr.get_session(SID)
    assert len(fake.api()) == 1
    assert waited(fake) == 0


# ---------------------------------------------------------------------- create: lost answers


def lost_then_listed(
    fake: FakeArr, failure: type[httpx.TransportError] | int, *, listed_after: int
) -> list[dict[str, Any]]:
    """POST create is recorded then its answer lost; the list shows it from call N on."""
    posted: list[dict[str, Any]] = []

    def lost_post(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        if isinstance(failure, int):
            return httpx.Response(failure)
        raise failure("server disconnected", request=request)

    lists = itertools.count(1)

    def listing(request: httpx.Request) -> httpx.Response:
        sessions = [v1_props(sid="someone-else", lease="04:00:00", status="Ready")]
        if posted and next(lists) >= listed_after:
            lease = posted[-1]["maxLeaseTime"]
            sessions.append(v1_props(sid=SID, status="Starting", lease=lease, elapsed="0:0:0"))
        return httpx.Response(200, json={"sessions": sessions})

    fake.on("POST", sessions_path(V1, "create"), then=lost_post)
    fake.on("GET", sessions_path(V1), then=listing)
    return posted


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.RemoteProtocolError, id="remote-protocol-error"),
        pytest.param(httpx.ReadError, id="read-error"),
        pytest.param(httpx.ReadTimeout, id="read-timeout"),
        pytest.param(500, id="500"),
        pytest.param(502, id="502"),
    ],
)
@pytest.mark.parametrize(
    "listed_after", [pytest.param(1, id="first-list"), pytest.param(3, id="third-list")]
)
async def test_v1_lost_create_adopts_the_listed_session(
    fake: FakeArr, failure: type[httpx.TransportError] | int, listed_after: int
) -> None:
    """A lost create answer is not re-posted: the session with its fingerprint is adopted."""
    posted = lost_then_listed(fake, failure, listed_after=listed_after)
    async with make_client(fake) as arr:
        session = await arr.create_session(lease="4:0:0")
    assert len(posted) == 1
    assert session.id == SID
    assert session.max_lease == parse_timespan(posted[0]["maxLeaseTime"])
    assert len(fake.api("GET", sessions_path(V1))) == listed_after
    assert fake.api("DELETE") == []


async def test_v1_lost_create_reposts_only_when_the_list_shows_nothing(fake: FakeArr) -> None:
    """After three empty lists the client posts again, with a new fingerprint."""
    posts: list[dict[str, Any]] = []

    def post(request: httpx.Request) -> httpx.Response:
        posts.append(json.loads(request.content))
        if len(posts) == 1:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return httpx.Response(202, json={"sessionId": SID})

    fake.on("POST", sessions_path(V1, "create"), then=post)
    fake.on("GET", sessions_path(V1), then=reply(200, {"sessions": []}))
    async with make_client(fake) as arr:
        session = await arr.create_session(lease=timedelta(hours=4))
    assert len(posts) == 2
    assert len(fake.api("GET", sessions_path(V1))) == 3
    assert fake.api()[-1].method == "POST"
    assert posts[0]["maxLeaseTime"] != posts[1]["maxLeaseTime"]
    assert session.id == SID


async def test_v1_create_outcome_unknown_after_three_lost_rounds(fake: FakeArr) -> None:
    """Three lost answers with nothing listed: CreateOutcomeUnknownError, no fourth POST."""
    fake.on("POST", sessions_path(V1, "create"), then=drop(httpx.RemoteProtocolError))
    fake.on("GET", sessions_path(V1), then=reply(200, {"sessions": []}))
    async with make_client(fake) as arr:
        with pytest.raises(CreateOutcomeUnknownError, match="3 times"):
            await arr.create_session(lease=60)
    assert len(fake.api("POST")) == 3
    assert len(fake.api("GET")) == 9


async def test_v1_create_listing_failure_never_reposts(fake: FakeArr) -> None:
    """When the reconcile list itself fails, "not found" proves nothing: no second POST."""
    fake.on("POST", sessions_path(V1, "create"), then=drop(httpx.ReadError))
    fake.on("GET", sessions_path(V1), then=reply(403, {"error": {"code": "F", "message": "no"}}))
    async with make_client(fake) as arr:
        with pytest.raises(CreateOutcomeUnknownError, match="could not be read") as info:
            await arr.create_session(lease=60)
    assert len(fake.api("POST")) == 1
    posted = json.loads(fake.api("POST")[0].content)["maxLeaseTime"]
    assert info.value.lease_fingerprint == posted
    assert posted in str(info.value)


async def test_v1_create_timeout_never_reposts(fake: FakeArr) -> None:
    """A timed-out create may still be carried out later: no second POST even if not listed."""
    fake.on("POST", sessions_path(V1, "create"), then=drop(httpx.ReadTimeout))
    fake.on("GET", sessions_path(V1), then=reply(200, {"sessions": []}))
    async with make_client(fake) as arr:
        with pytest.raises(CreateOutcomeUnknownError, match="may still be carried out"):
            await arr.create_session(lease=60)
    assert len(fake.api("POST")) == 1


async def test_v1_create_duplicates_are_stopped(fake: FakeArr) -> None:
    """Two listed sessions with the attempt's fingerprint: one adopted, the other stopped."""
    posted: list[dict[str, Any]] = []

    def lost_post(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        raise httpx.RemoteProtocolError("gone", request=request)

    def listing(request: httpx.Request) -> httpx.Response:
        lease = posted[-1]["maxLeaseTime"]
        return httpx.Response(
            200,
            json={"sessions": [v1_props(sid=SID, lease=lease), v1_props(sid="dup", lease=lease)]},
        )

    fake.on("POST", sessions_path(V1, "create"), then=lost_post)
    fake.on("GET", sessions_path(V1), then=listing)
    fake.on("DELETE", sessions_path(V1, "dup"), reply(204))
    async with make_client(fake) as arr:
        session = await arr.create_session(lease=60)
    assert session.id == SID
    assert [r.url.path for r in fake.api("DELETE")] == [sessions_path(V1, "dup")]


async def test_v1_create_connect_error_is_retried_plainly(fake: FakeArr) -> None:
    """A connection never made cannot have created a session: POST again, no listing."""
    fake.on(
        "POST",
        sessions_path(V1, "create"),
        drop(httpx.ConnectError),
        reply(202, {"sessionId": SID}),
    )
    async with make_client(fake) as arr:
        session = await arr.create_session(lease=60)
    assert session.id == SID
    assert [r.method for r in fake.api()] == ["POST", "POST"]


async def test_v1_create_429_is_retried(fake: FakeArr) -> None:
    """A 429 on create was refused, not carried out: it is retried after Retry-After."""
    fake.on(
        "POST",
        sessions_path(V1, "create"),
        reply(429, headers={"Retry-After": "5"}),
        reply(202, {"sessionId": SID}),
    )
    async with make_client(fake) as arr:
        await arr.create_session(lease=60)
    assert [r.method for r in fake.api()] == ["POST", "POST"]
    assert waited(fake) >= 5


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(drop(httpx.RemoteProtocolError), id="remote-protocol-error"),
        pytest.param(drop(httpx.ReadError), id="read-error"),
        pytest.param(reply(503), id="503"),
    ],
)
async def test_2021_create_is_retried_with_the_same_id(fake: FakeArr, failure: Reply) -> None:
    """A dropped 2021 PUT is re-sent to the same ID with the same body (200 = same session)."""
    path = sessions_path(V2021, "job-1")
    fake.on("PUT", path, failure, reply(200, v2021_props(sid="job-1", status="Starting")))
    async with make_client(fake, V2021) as arr:
        session = await arr.create_session(lease=15, session_id="job-1")
    first, second = fake.api()
    assert (first.url, first.content) == (second.url, second.content)
    assert session.id == "job-1"


async def test_2021_create_conflict(fake: FakeArr) -> None:
    """409 (ID exists with other settings) is a SessionConflictError, not retried."""
    fake.on(
        "PUT",
        sessions_path(V2021, "job-1"),
        reply(409, {"error": {"code": "Conflict", "message": "exists with other settings"}}),
    )
    async with make_client(fake, V2021) as arr:
        with pytest.raises(SessionConflictError, match="exists with other settings"):
            await arr.create_session(lease=15, session_id="job-1")
    assert len(fake.api()) == 1


# ---------------------------------------------------------------------- stop


def stop_route(api_version: str) -> tuple[str, str]:
    if api_version == V1:
        return "DELETE", sessions_path(V1, SID)
    return "POST", sessions_path(V2021, SID, ":stop")


@pytest.mark.parametrize("api_version", BOTH)
@pytest.mark.parametrize(
    ("replies", "stopped"),
    [
        pytest.param([reply(204)], True, id="204"),
        pytest.param([reply(404)], False, id="404-unknown"),
        pytest.param([reply(503), reply(204)], True, id="503-then-204"),
        pytest.param([drop(httpx.ConnectError), reply(204)], True, id="connect-error-then-204"),
    ],
)
async def test_stop_is_idempotent(
    fake: FakeArr, api_version: str, replies: list[Reply], stopped: bool
) -> None:
    """Stop answers True when it stopped the session, False when it was already gone."""
    fake.on(*stop_route(api_version), *replies)
    async with make_client(fake, api_version) as arr:
        assert await arr.stop_session(SID) is stopped


@pytest.mark.parametrize("status", [pytest.param(409, id="409"), pytest.param(422, id="422")])
@pytest.mark.parametrize(
    "state", [pytest.param("Stopped", id="stopped"), pytest.param("Expired", id="expired")]
)
async def test_2021_stop_of_an_ended_session(fake: FakeArr, status: int, state: str) -> None:
    """A 409/422 on :stop for a session that has already ended means False, not an error."""
    fake.on(*stop_route(V2021), reply(status, {"error": {"code": "C", "message": "ended"}}))
    fake.on("GET", get_path(V2021), reply(200, v2021_props(status=state)))
    async with make_client(fake, V2021) as arr:
        assert await arr.stop_session(SID) is False


async def test_2021_stop_refused_for_a_live_session(fake: FakeArr) -> None:
    """A 409 on :stop for a session that is still Ready is raised."""
    fake.on(*stop_route(V2021), reply(409, {"error": {"code": "C", "message": "busy"}}))
    fake.on("GET", get_path(V2021), reply(200, v2021_props(status="Ready")))
    async with make_client(fake, V2021) as arr:
        with pytest.raises(SessionConflictError, match="busy"):
            await arr.stop_session(SID)


# ---------------------------------------------------------------------- extend_session_by


@pytest.mark.parametrize(
    ("elapsed", "lease", "duration", "sent"),
    [
        pytest.param("01:00:00", "02:00:00", 90, "02:30:00", id="elapsed-plus-duration"),
        pytest.param("00:10:30", "00:30:00", "0:30:0", "00:40:30", id="exact-seconds"),
        pytest.param("23:00:00", "23:30:00", 120, "1.00:00:00", id="capped-at-24h"),
    ],
)
async def test_v1_extend_by_sends_elapsed_plus_duration(
    fake: FakeArr, elapsed: str, lease: str, duration: Any, sent: str
) -> None:
    """v1 sends exactly elapsed + duration as the new total, capped at 24 h."""
    fake.on(
        "GET",
        get_path(V1),
        reply(200, v1_props(elapsed=elapsed, lease=lease)),
        reply(200, v1_props(elapsed=elapsed, lease=sent)),
    )
    fake.on("PATCH", sessions_path(V1, SID), reply(200))
    async with make_client(fake) as arr:
        session = await arr.extend_session_by(SID, duration)
    (patch,) = fake.api("PATCH")
    assert json.loads(patch.content) == {"maxLeaseTime": sent}
    assert session.max_lease == parse_timespan(sent)


@pytest.mark.parametrize(
    ("elapsed", "lease", "duration", "sent"),
    [
        pytest.param(60, 60, 30, 91, id="elapsed-plus-duration-plus-slack"),
        pytest.param(0, 15, 20, 21, id="fresh-session"),
        pytest.param(1380, 1400, 120, 1440, id="capped-at-24h"),
    ],
)
async def test_2021_extend_by_adds_a_minute_of_slack(
    fake: FakeArr, elapsed: int, lease: int, duration: int, sent: int
) -> None:
    """2021 elapsed minutes are rounded down, so one more minute is added (capped at 24 h)."""
    fake.on("GET", get_path(V2021), reply(200, v2021_props(elapsed=elapsed, lease=lease)))
    fake.on("PATCH", sessions_path(V2021, SID), reply(200, v2021_props(lease=sent)))
    async with make_client(fake, V2021) as arr:
        session = await arr.extend_session_by(SID, duration)
    (patch,) = fake.api("PATCH")
    assert json.loads(patch.content) == {"maxLeaseTimeMinutes": sent}
    assert session.max_lease == timedelta(minutes=sent)


@pytest.mark.parametrize(
    ("api_version", "body"),
    [
        pytest.param(V1, v1_props(elapsed="01:00:00", lease="04:00:00"), id="v1"),
        pytest.param(V2021, v2021_props(elapsed=60, lease=240), id="2021"),
        pytest.param(V1, v1_props(elapsed="23:00:00", lease="1.00:00:00"), id="v1-at-cap"),
    ],
)
async def test_extend_by_sends_nothing_when_the_lease_suffices(
    fake: FakeArr, api_version: str, body: dict[str, Any]
) -> None:
    """When the lease already reaches that far, no PATCH is sent."""
    fake.on("GET", get_path(api_version), reply(200, body))
    async with make_client(fake, api_version) as arr:
        session = await arr.extend_session_by(SID, 60)
    assert fake.api("PATCH") == []
    assert session.max_lease == (
        parse_timespan(body["sessionMaxLeaseTime"])
        if api_version == V1
        else timedelta(minutes=body["maxLeaseTimeMinutes"])
    )


@pytest.mark.parametrize("api_version", BOTH)
async def test_extend_by_an_ended_session(fake: FakeArr, api_version: str) -> None:
    """Extending an expired session raises SessionExpiredError and sends no PATCH."""
    fake.on("GET", get_path(api_version), reply(200, props(api_version, "Expired")))
    async with make_client(fake, api_version) as arr:
        with pytest.raises(SessionExpiredError):
            await arr.extend_session_by(SID, 60)
    assert fake.api("PATCH") == []


# ---------------------------------------------------------------------- wait_until_ready


@pytest.mark.parametrize("api_version", BOTH)
async def test_wait_until_ready(fake: FakeArr, api_version: str) -> None:
    """Starting, Starting, Ready: returns Ready; on_status hears only the two changes."""
    fake.on(
        "GET",
        get_path(api_version),
        reply(200, props(api_version, "Starting")),
        reply(200, props(api_version, "Starting")),
        reply(200, props(api_version, "Ready")),
    )
    changes: list[tuple[SessionStatus | None, SessionStatus]] = []
    async with make_client(fake, api_version) as arr:
        session = await arr.wait_until_ready(
            SID, on_status=lambda old, s: changes.append((old, s.status))
        )
    assert session.status is SessionStatus.READY
    assert changes == [
        (None, SessionStatus.STARTING),
        (SessionStatus.STARTING, SessionStatus.READY),
    ]
    assert waited(fake) == 10.0
    assert len(fake.api()) == 3


async def test_wait_until_ready_awaits_async_callbacks(fake: FakeArr) -> None:
    """An async on_status is awaited."""
    fake.on("GET", get_path(V1), reply(200, v1_props(status="Starting")), reply(200, v1_props()))
    seen: list[SessionStatus] = []

    async def on_status(old: SessionStatus | None, session: Session) -> None:
        seen.append(session.status)

    async with make_client(fake) as arr:
        await arr.wait_until_ready(SID, on_status=on_status, poll_interval=7)
    assert seen == [SessionStatus.STARTING, SessionStatus.READY]
    assert waited(fake) == 7.0


@pytest.mark.parametrize("api_version", BOTH)
@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param("Error", SessionFailedError, id="error"),
        pytest.param("Expired", SessionExpiredError, id="expired"),
        pytest.param("Stopped", SessionStoppedError, id="stopped"),
    ],
)
async def test_wait_until_ready_ends(
    fake: FakeArr, api_version: str, status: str, error: type[ArrError]
) -> None:
    """A session that ends while starting raises its specific error with the service's message."""
    fake.on(
        "GET",
        get_path(api_version),
        reply(200, props(api_version, "Starting")),
        reply(
            200,
            props(api_version, status, message="No capacity for size Premium"),
            headers={"MS-CV": "CV-END.0"},
        ),
    )
    async with make_client(fake, api_version) as arr:
        with pytest.raises(error) as info:
            await arr.wait_until_ready(SID)
    assert "No capacity for size Premium" in str(info.value)
    assert SID in str(info.value)
    assert "CV-END.0" in str(info.value)
    assert info.value.session is not None  # type: ignore[attr-defined]
    assert info.value.session.status == SessionStatus(status)  # type: ignore[attr-defined]


async def test_wait_until_ready_v1_stopping(fake: FakeArr) -> None:
    """v1's Stopping means someone stopped it: SessionStoppedError."""
    fake.on("GET", get_path(V1), reply(200, v1_props(status="Stopping")))
    async with make_client(fake) as arr:
        with pytest.raises(SessionStoppedError, match="Stopping"):
            await arr.wait_until_ready(SID)


@pytest.mark.parametrize("api_version", BOTH)
async def test_wait_until_ready_deadline(fake: FakeArr, api_version: str) -> None:
    """Never Ready: ReadyTimeoutError at the deadline, not a poll later."""
    fake.on(
        "GET",
        get_path(api_version),
        then=reply(200, props(api_version, "Starting"), headers={"MS-CV": "CV-LAST.0"}),
    )
    async with make_client(fake, api_version) as arr:
        with pytest.raises(ReadyTimeoutError, match="not Ready after 30s") as info:
            await arr.wait_until_ready(SID, timeout=30, poll_interval=5)
    assert waited(fake) == 30.0
    assert len(fake.api()) == 7
    assert "CV-LAST.0" in str(info.value)


@pytest.mark.parametrize(
    "max_attempts", [pytest.param(4, id="client-retry"), pytest.param(1, id="poll-retry")]
)
async def test_wait_until_ready_honours_429(fake: FakeArr, max_attempts: int) -> None:
    """A 429 while polling waits Retry-After, then polling goes on to Ready."""
    fake.on(
        "GET",
        get_path(V1),
        reply(200, v1_props(status="Starting")),
        reply(429, headers={"Retry-After": "20"}),
        reply(200, v1_props(status="Ready")),
    )
    async with make_client(fake, max_attempts=max_attempts) as arr:
        session = await arr.wait_until_ready(SID, poll_interval=5)
    assert session.status is SessionStatus.READY
    assert waited(fake) >= 25.0
    assert len(fake.api()) == 3


async def test_wait_until_ready_429_past_the_deadline(fake: FakeArr) -> None:
    """A Retry-After beyond the deadline ends the wait with ReadyTimeoutError at once."""
    fake.on(
        "GET",
        get_path(V1),
        reply(200, v1_props(status="Starting")),
        then=reply(429, headers={"Retry-After": "100", "MS-CV": "CV-429.0"}),
    )
    async with make_client(fake, max_attempts=1) as arr:
        with pytest.raises(ReadyTimeoutError, match="429") as info:
            await arr.wait_until_ready(SID, timeout=30, poll_interval=5)
    assert "CV-429.0" in str(info.value)
    assert waited(fake) == 5.0


async def test_wait_until_ready_unknown_session(fake: FakeArr) -> None:
    """A 404 while waiting is a SessionNotFoundError."""
    fake.on("GET", get_path(V1), reply(404))
    async with make_client(fake) as arr:
        with pytest.raises(SessionNotFoundError):
            await arr.wait_until_ready(SID)


# ---------------------------------------------------------------------- error messages


CV = {"MS-CV": "CV-X.1"}
BAD_REQUEST = {"error": {"code": "BadRequest", "message": "value cannot be negative"}}
# (api version, method, path, answer, what the test calls, expected error)
ERROR_SCENARIOS = [
    pytest.param(
        V1, "GET", get_path(V1), reply(404, headers=CV), "get", SessionNotFoundError,
        id="v1-get-404",
    ),
    pytest.param(
        V2021, "GET", get_path(V2021), reply(503, headers=CV), "get", ServiceError,
        id="2021-get-503-exhausted",
    ),
    pytest.param(
        V2021, "GET", get_path(V2021), reply(429, headers={**CV, "Retry-After": "1"}), "get",
        RateLimitedError, id="2021-get-429-exhausted",
    ),
    pytest.param(
        V2021, "PUT", sessions_path(V2021, "job-1"), reply(400, BAD_REQUEST, CV), "create",
        BadRequestError, id="2021-create-400",
    ),
    pytest.param(
        V1, "POST", sessions_path(V1, "create"), reply(400, {"message": "bad"}, CV), "create",
        BadRequestError, id="v1-create-400",
    ),
    pytest.param(
        V1, "GET", get_path(V1), reply(401, headers=CV), "get", AuthenticationError,
        id="v1-get-401-twice",
    ),
    pytest.param(
        V1, "GET", get_path(V1), reply(200, v1_props(status="Error", message="boom"), CV),
        "wait", SessionFailedError, id="v1-wait-error",
    ),
    pytest.param(
        V2021, "GET", get_path(V2021), reply(200, v2021_props(status="Expired"), CV), "wait",
        SessionExpiredError, id="2021-wait-expired",
    ),
    pytest.param(
        V2021, "GET", get_path(V2021), reply(200, v2021_props(status="Error"), CV), "extend",
        SessionFailedError, id="2021-extend-by-error",
    ),
]  # fmt: skip


CALLS: dict[str, Callable[[ArrClient, str], Awaitable[Any]]] = {
    "get": lambda arr, api_version: arr.get_session(SID),
    "create": lambda arr, api_version: arr.create_session(
        lease=15, session_id=None if api_version == V1 else "job-1"
    ),
    "wait": lambda arr, api_version: arr.wait_until_ready(SID),
    "extend": lambda arr, api_version: arr.extend_session_by(SID, 30),
}


@pytest.mark.parametrize(
    ("api_version", "method", "path", "answer", "call", "error"), ERROR_SCENARIOS
)
async def test_errors_name_the_ms_cv_and_hide_secrets(
    fake: FakeArr,
    api_version: str,
    method: str,
    path: str,
    answer: Reply,
    call: str,
    error: type[Exception],
) -> None:
    """Every error names the response's MS-CV and never contains the key or a token."""
    fake.on(method, path, then=answer)
    async with make_client(fake, api_version, max_attempts=2) as arr:
        with pytest.raises(error) as info:
            await CALLS[call](arr, api_version)
    assert isinstance(info.value, ArrError)
    assert "CV-X.1" in str(info.value)
    assert_no_secrets(info.value, fake)


@pytest.mark.parametrize(
    ("api_version", "method", "path", "answer", "call"),
    [
        pytest.param(
            V1, "GET", get_path(V1), reply(200, {**v1_props(), "sessionStatus": "Asleep"}, CV),
            "get", id="v1-get-unknown-status",
        ),
        pytest.param(
            V2021, "GET", get_path(V2021), reply(200, {"status": "Ready"}, CV), "get",
            id="2021-get-no-id",
        ),
        pytest.param(
            V1, "GET", get_path(V1),
            lambda r: httpx.Response(200, text="<html>proxy</html>", headers=CV),
            "get", id="v1-get-not-json",
        ),
        pytest.param(
            V2021, "GET", sessions_path(V2021), reply(200, ["not", "an", "object"], CV), "list",
            id="2021-list-not-an-object",
        ),
        pytest.param(
            V1, "GET", sessions_path(V1), reply(200, {"sessions": [{"sessionId": SID}]}, CV),
            "list", id="v1-list-no-status",
        ),
        pytest.param(
            V2021, "PUT", sessions_path(V2021, "job-1"), reply(201, {"id": "job-1"}, CV),
            "create", id="2021-create-no-status",
        ),
        pytest.param(
            V2021, "PATCH", sessions_path(V2021, SID), reply(200, {}, CV), "extend-to",
            id="2021-extend-empty-object",
        ),
    ],
)  # fmt: skip
async def test_unreadable_answers_are_arr_errors(
    fake: FakeArr, api_version: str, method: str, path: str, answer: Reply, call: str
) -> None:
    """A success status with a body the client cannot read is an ArrHTTPError naming MS-CV."""
    fake.on(method, path, then=answer)
    calls: dict[str, Callable[[ArrClient], Awaitable[Any]]] = {
        "get": lambda arr: arr.get_session(SID),
        "list": lambda arr: arr.list_sessions(),
        "create": lambda arr: arr.create_session(lease=15, session_id="job-1"),
        "extend-to": lambda arr: arr.extend_session(SID, 20),
    }
    async with make_client(fake, api_version) as arr:
        with pytest.raises(ArrHTTPError, match="unreadable") as info:
            await calls[call](arr)
    assert "CV-X.1" in str(info.value)
