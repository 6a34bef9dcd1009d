"""STS tokens: reading exp, caching, refreshing before exp and once after a 401."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from arr_prefect.auth import AccessToken, TokenCache, TokenSource, jwt_expiry
from arr_prefect.clock import VirtualClock
from arr_prefect.errors import ArrHTTPError, ArrTransportError, AuthenticationError
from tests.unit.test_client import (
    ACCOUNT_ID,
    ACCOUNT_KEY,
    SID,
    START,
    V1,
    V2021,
    FakeArr,
    assert_no_secrets,
    drop,
    get_path,
    make_client,
    make_jwt,
    reply,
    sessions_path,
    v1_props,
    v2021_props,
)

DAY = 86_400.0


@pytest.fixture(autouse=True)
def _no_arr_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's ARR_* variables out of every test."""
    for name in list(os.environ):
        if name.upper().startswith("ARR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake() -> FakeArr:
    """A scripted service on a clock that moves only when a test advances it."""
    service = FakeArr(VirtualClock(START))
    service.on("GET", get_path(V1), then=reply(200, v1_props()))
    return service


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TestJwtExpiry:
    def test_reads_exp(self) -> None:
        """The exp claim of a hand-made JWT is read as an aware UTC datetime."""
        assert jwt_expiry(make_jwt(START + 3600)) == datetime.fromtimestamp(START + 3600, tz=UTC)

    @pytest.mark.parametrize(
        "token",
        [
            pytest.param("opaque-token", id="not-a-jwt"),
            pytest.param("a.b", id="two-parts"),
            pytest.param("a.!!!.c", id="payload-not-base64"),
            pytest.param(f"a.{_b64(b'not json')}.c", id="payload-not-json"),
            pytest.param(f"a.{_b64(b'[1, 2]')}.c", id="payload-a-list"),
            pytest.param(make_jwt(None), id="no-exp"),
            pytest.param(f"a.{_b64(json.dumps({'exp': 'soon'}).encode())}.c", id="exp-a-word"),
            pytest.param(f"a.{_b64(json.dumps({'exp': 1e20}).encode())}.c", id="exp-huge"),
            pytest.param("a." + _b64(b'{"exp": 1') + ".c", id="truncated"),
        ],
    )
    def test_unreadable_exp_is_none(self, token: str) -> None:
        """A token whose exp cannot be read gives None, never an exception."""
        assert jwt_expiry(token) is None


def test_access_token_hides_itself() -> None:
    """repr and str of an AccessToken never show the token."""
    raw = make_jwt(START + DAY, marker="hidden")
    token = AccessToken(token=SecretStr(raw), expires_at=None, account_id=ACCOUNT_ID)
    assert raw not in repr(token)
    assert raw not in str(token)
    assert token.expires_in(START) is None


async def test_sts_request(fake: FakeArr) -> None:
    """GET {sts}/accounts/{id}/token with exactly "Bearer {accountId}:{key}"."""
    async with make_client(fake) as arr:
        token = await arr.get_access_token()
    (request,) = fake.sts_calls()
    assert request.method == "GET"
    assert str(request.url) == f"https://sts.test/accounts/{ACCOUNT_ID}/token"
    assert request.headers["Authorization"] == f"Bearer {ACCOUNT_ID}:{ACCOUNT_KEY}"
    assert token.token.get_secret_value() == fake.tokens[0]
    assert token.expires_at == datetime.fromtimestamp(START + DAY, tz=UTC)


@pytest.mark.parametrize("api_version", [pytest.param(V1, id="v1"), pytest.param(V2021, id="2021")])
async def test_session_calls_use_the_token_not_the_key(fake: FakeArr, api_version: str) -> None:
    """Session calls send "Bearer <token>"; the account key never goes to the session API."""
    fake.on("GET", get_path(V2021), then=reply(200, v2021_props()))
    async with make_client(fake, api_version) as arr:
        await arr.get_session(SID)
    (request,) = fake.api()
    assert request.headers["Authorization"] == f"Bearer {fake.tokens[0]}"
    assert ACCOUNT_KEY not in str(request.headers)


async def test_token_is_cached_across_calls(fake: FakeArr) -> None:
    """Many session calls fetch one token."""
    async with make_client(fake) as arr:
        for _ in range(5):
            await arr.get_session(SID)
    assert len(fake.sts_calls()) == 1
    assert len(fake.api()) == 5


async def test_cache_is_shared_between_clients(fake: FakeArr) -> None:
    """Two clients on one TokenCache (one per task in a flow) fetch one token."""
    cache = TokenCache()
    for _ in range(2):
        async with make_client(fake, token_cache=cache) as arr:
            await arr.get_session(SID)
    assert len(fake.sts_calls()) == 1


async def test_concurrent_calls_fetch_once(fake: FakeArr) -> None:
    """Concurrent first calls wait for one STS fetch instead of each making their own."""
    async with make_client(fake) as arr:
        await asyncio.gather(*(arr.get_session(SID) for _ in range(5)))
    assert len(fake.sts_calls()) == 1


def _source(cache: TokenCache, fetch: Any) -> TokenSource:
    return TokenSource(
        cache=cache,
        key=("sts", ACCOUNT_ID, "digest"),
        fetch=fetch,
        clock=VirtualClock(START),
        refresh_margin=300,
    )


def _token() -> AccessToken:
    expires = datetime.fromtimestamp(START + DAY, tz=UTC)
    return AccessToken(token=SecretStr("t"), expires_at=expires, account_id=ACCOUNT_ID)


async def test_waiters_get_the_fetched_token_together() -> None:
    """The waiters on a fetch all wake when it ends, not one per event-loop turn (a lock)."""
    gate = asyncio.Event()
    fetches = 0

    async def fetch() -> AccessToken:
        nonlocal fetches
        fetches += 1
        await gate.wait()
        return _token()

    source = _source(TokenCache(), fetch)
    waiters = [asyncio.ensure_future(source.get()) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    for _ in range(4):  # the fetch ends, then every waiter's shield resolves
        await asyncio.sleep(0)
    assert sum(w.done() for w in waiters) == 50
    assert fetches == 1


async def test_a_cancelled_waiter_does_not_cancel_the_fetch() -> None:
    """The first caller giving up leaves its fetch running for the others: one STS call."""
    gate = asyncio.Event()
    fetches = 0

    async def fetch() -> AccessToken:
        nonlocal fetches
        fetches += 1
        await gate.wait()
        return _token()

    source = _source(TokenCache(), fetch)
    first = asyncio.ensure_future(source.get())
    second = asyncio.ensure_future(source.get())
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second).token.get_secret_value() == "t"
    assert first.cancelled()
    assert fetches == 1


async def test_token_refreshed_within_the_margin(fake: FakeArr) -> None:
    """A token is re-fetched once less than token_refresh_margin is left before exp."""
    async with make_client(fake, token_refresh_margin=300) as arr:
        await arr.get_session(SID)
        fake.clock.advance(DAY - 301)
        await arr.get_session(SID)
        assert len(fake.sts_calls()) == 1
        fake.clock.advance(2)
        await arr.get_session(SID)
    assert len(fake.sts_calls()) == 2
    assert [r.headers["Authorization"] for r in fake.api()] == [
        f"Bearer {fake.tokens[0]}",
        f"Bearer {fake.tokens[0]}",
        f"Bearer {fake.tokens[1]}",
    ]


async def test_token_without_exp_is_cached_briefly(fake: FakeArr) -> None:
    """A token with no readable exp is used for ten minutes, then fetched again."""
    fake.sts.extend([reply(200, {"AccessToken": "opaque-1"}), reply(200, {"AccessToken": "op-2"})])
    async with make_client(fake, token_refresh_margin=0) as arr:
        await arr.get_session(SID)
        fake.clock.advance(599)
        await arr.get_session(SID)
        fake.clock.advance(2)
        await arr.get_session(SID)
    assert [r.headers["Authorization"] for r in fake.api()] == [
        "Bearer opaque-1",
        "Bearer opaque-1",
        "Bearer op-2",
    ]


async def test_401_refreshes_once_and_resends(fake: FakeArr) -> None:
    """A 401 from the session API drops the token, fetches a new one and resends once."""
    fake.on("GET", get_path(V1), reply(401, headers={"WWW-Authenticate": 'Bearer error="x"'}))
    async with make_client(fake) as arr:
        session = await arr.get_session(SID)
        await arr.get_session(SID)
    assert session.id == SID
    assert len(fake.sts_calls()) == 2
    assert [r.headers["Authorization"] for r in fake.api()] == [
        f"Bearer {fake.tokens[0]}",
        f"Bearer {fake.tokens[1]}",
        f"Bearer {fake.tokens[1]}",
    ]


async def test_401_resend_keeps_the_body(fake: FakeArr) -> None:
    """The resent request after a 401 carries the same body (a 2021 PUT create)."""
    path = sessions_path(V2021, "job-1")
    fake.on("PUT", path, reply(401), reply(201, v2021_props(sid="job-1", status="Starting")))
    async with make_client(fake, V2021) as arr:
        await arr.create_session(lease=15, session_id="job-1")
    first, second = fake.api()
    assert first.content == second.content == b'{"maxLeaseTimeMinutes":15,"size":"Standard"}'


async def test_second_401_is_an_authentication_error(fake: FakeArr) -> None:
    """A 401 after the refresh is final: AuthenticationError, two STS calls, two requests."""
    fake.on("GET", get_path(V1), reply(401), reply(401, headers={"MS-CV": "CV-401.1"}))
    async with make_client(fake) as arr:
        with pytest.raises(AuthenticationError) as info:
            await arr.get_session(SID)
    assert info.value.status_code == 401
    assert "CV-401.1" in str(info.value)
    assert len(fake.sts_calls()) == 2
    assert len(fake.api()) == 2
    assert_no_secrets(info.value, fake)


@pytest.mark.parametrize("status", [pytest.param(401, id="401"), pytest.param(403, id="403")])
async def test_sts_refusal_never_shows_the_key(fake: FakeArr, status: int) -> None:
    """An STS 401/403 is an AuthenticationError whose str, repr and args hide the key."""
    fake.sts.append(
        reply(status, {"error": {"code": "Unauthorized", "message": "bad key"}}, {"MS-CV": "S.1"})
    )
    async with make_client(fake) as arr:
        with pytest.raises(AuthenticationError, match="get access token") as info:
            await arr.get_session(SID)
    assert "S.1" in str(info.value)
    assert "bad key" in str(info.value)
    for text in (str(info.value), repr(info.value), repr(info.value.args), repr(vars(info.value))):
        assert ACCOUNT_KEY not in text
    assert fake.api() == []


async def test_sts_429_is_retried(fake: FakeArr) -> None:
    """A 429 from the STS waits Retry-After and tries again."""
    fake.sts.append(reply(429, headers={"Retry-After": "3"}))
    fake.clock.autojump = True
    async with make_client(fake) as arr:
        await arr.get_session(SID)
    assert len(fake.sts_calls()) == 2
    assert fake.clock.time() - START >= 3


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        pytest.param(reply(200, {"token": "x"}), ArrHTTPError, "no AccessToken", id="no-token"),
        pytest.param(reply(200, ["x"]), ArrHTTPError, "no AccessToken", id="not-an-object"),
        pytest.param(drop(httpx.ConnectError), ArrTransportError, "get access token", id="down"),
    ],
)
async def test_sts_failures(fake: FakeArr, answer: Any, error: type[Exception], match: str) -> None:
    """An STS answer without a token, or no answer at all, is an ArrError without the key."""
    fake.sts.extend([answer] * 4)
    fake.clock.autojump = True
    async with make_client(fake) as arr:
        with pytest.raises(error, match=match) as info:
            await arr.get_session(SID)
    assert ACCOUNT_KEY not in str(info.value)
    assert ACCOUNT_KEY not in repr(info.value.args)
    assert fake.api() == []


@pytest.mark.parametrize("api_version", [V1, V2021])
async def test_retry_logging_never_shows_the_key(
    fake: FakeArr, api_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """STS connect error, 429 and 503 (then a token), and the same on a session call: no
    log record at any level, from any logger, holds the key or the token."""
    fake.sts.extend(
        [drop(httpx.ConnectError), reply(429, headers={"Retry-After": "1"}), reply(503)]
    )
    fake.on(
        "GET",
        get_path(api_version),
        drop(httpx.ConnectError),
        reply(503),
        reply(429, headers={"Retry-After": "1"}),
        then=reply(200, v1_props() if api_version == V1 else v2021_props()),
    )
    fake.clock.autojump = True
    caplog.set_level(logging.DEBUG)
    async with make_client(fake, api_version) as arr:
        await arr.get_session(SID)
    assert len(fake.sts_calls()) == 4
    warnings = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(warnings) == 6, [r.getMessage() for r in caplog.records]
    secrets = [ACCOUNT_KEY, *fake.tokens, *(t.split(".")[2] for t in fake.tokens)]
    for record in caplog.records:
        text = " ".join(
            [record.getMessage(), repr(record.args), record.exc_text or "", repr(vars(record))]
        )
        for secret in secrets:
            assert secret not in text, f"{record.name} {record.levelname}: {record.getMessage()}"
