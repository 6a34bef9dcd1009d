"""The emulator refuses wrong keys, expired tokens and other accounts' tokens, via the client."""

from __future__ import annotations

import httpx
import pytest

from arr_prefect.auth import AccessToken, TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.errors import AuthenticationError
from tests.security.conftest import (
    ACCOUNT_ID,
    ACCOUNT_KEY,
    BASE_URL,
    OTHER_ACCOUNT_ID,
    OTHER_ACCOUNT_KEY,
    RecordingTransport,
    make_client,
    make_settings,
)

BOTH = [pytest.param("v1", id="v1"), pytest.param("2021-01-01", id="2021-01-01")]
LIST_ROUTE = {"v1": "v1.list", "2021-01-01": "v2021.list"}


@pytest.mark.parametrize("api_version", BOTH)
async def test_wrong_key_is_401_without_the_key_in_the_message(
    emulator: Emulator, clock: VirtualClock, api_version: str
) -> None:
    """A wrong account key gets AuthenticationError (401); neither key shows in the error."""
    wrong = "wrong-key-3b9e1d"
    arr = make_client(api_version, emulator.transport(), clock, account_key=wrong)
    async with arr:
        with pytest.raises(AuthenticationError) as info:
            await arr.list_sessions()
    error = info.value
    assert error.status_code == 401
    assert "get access token failed: HTTP 401" in str(error)
    for text in (str(error), repr(error), repr(error.__dict__)):
        assert wrong not in text
        assert ACCOUNT_KEY not in text
    assert emulator.request_count(LIST_ROUTE[api_version]) == 0


@pytest.mark.parametrize("api_version", BOTH)
async def test_revoked_token_is_refreshed_once_and_the_call_succeeds(
    emulator: Emulator, recording: RecordingTransport, clock: VirtualClock, api_version: str
) -> None:
    """After every token is revoked, the 401 makes the client fetch one new token and retry."""
    async with make_client(api_version, recording, clock) as arr:
        assert await arr.list_sessions() == []
        assert emulator.expire_tokens() == 1
        assert await arr.list_sessions() == []
    route = LIST_ROUTE[api_version]
    assert emulator.request_counts()[route] == {"200": 2, "401": 1}
    assert emulator.request_count("sts.token", 200) == 2
    assert len(set(recording.tokens)) == 2


@pytest.mark.parametrize("api_version", BOTH)
async def test_token_past_its_lifetime_is_replaced(
    emulator: Emulator, recording: RecordingTransport, clock: VirtualClock, api_version: str
) -> None:
    """Past the token's exp (1 h here), the next call uses a fresh token and succeeds."""
    async with make_client(api_version, recording, clock) as arr:
        assert await arr.list_sessions() == []
        clock.advance(3600 + 1)
        assert await arr.list_sessions() == []
    assert emulator.request_count("sts.token", 200) == 2
    assert emulator.request_count(LIST_ROUTE[api_version], 200) == 2


async def test_expired_token_sent_raw_is_401(emulator: Emulator, clock: VirtualClock) -> None:
    """The emulator itself refuses an expired token with 401 invalid_token."""
    async with httpx.AsyncClient(transport=emulator.transport(), base_url=BASE_URL) as raw:
        token = await _raw_token(raw, ACCOUNT_ID, ACCOUNT_KEY)
        clock.advance(3600 + 1)
        response = await raw.get(
            f"/v1/accounts/{ACCOUNT_ID}/sessions", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 401
    assert "invalid_token" in response.headers["WWW-Authenticate"]
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize("api_version", BOTH)
async def test_token_of_another_account_is_403(
    emulator: Emulator, clock: VirtualClock, api_version: str
) -> None:
    """A valid token of account B used on account A's sessions: 403, AuthenticationError."""
    async with httpx.AsyncClient(transport=emulator.transport(), base_url=BASE_URL) as raw:
        foreign = await _raw_token(raw, OTHER_ACCOUNT_ID, OTHER_ACCOUNT_KEY)
    settings = make_settings(api_version)
    cache = TokenCache()
    # Plant B's token where the client of account A keeps its own.
    key = TokenCache.key(settings.sts_base_url, ACCOUNT_ID, settings.require_account()[1])
    cache.put(
        key,
        AccessToken.model_validate(
            {"token": foreign, "expires_at": None, "account_id": ACCOUNT_ID}
        ),
    )
    async with ArrClient(
        settings, transport=emulator.transport(), clock=clock, token_cache=cache
    ) as arr:
        with pytest.raises(AuthenticationError) as info:
            await arr.list_sessions()
    assert info.value.status_code == 403
    assert "not issued for this account" in str(info.value)
    assert foreign not in str(info.value)
    assert emulator.request_count("sts.token") == 1  # a 403 is not "refresh and retry"


async def test_sts_refuses_credentials_of_another_account(emulator: Emulator) -> None:
    """Account B's id and key cannot buy a token for account A's path."""
    async with httpx.AsyncClient(transport=emulator.transport(), base_url=BASE_URL) as raw:
        response = await raw.get(
            f"/accounts/{ACCOUNT_ID}/token",
            headers={"Authorization": f"Bearer {OTHER_ACCOUNT_ID}:{OTHER_ACCOUNT_KEY}"},
        )
    assert response.status_code == 401
    assert "AccessToken" not in response.text


async def _raw_token(raw: httpx.AsyncClient, account_id: str, key: str) -> str:
    response = await raw.get(
        f"/accounts/{account_id}/token", headers={"Authorization": f"Bearer {account_id}:{key}"}
    )
    assert response.status_code == 200
    token = response.json()["AccessToken"]
    assert isinstance(token, str)
    return token
