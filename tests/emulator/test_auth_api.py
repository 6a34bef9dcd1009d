"""The STS and token checks over HTTP."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from tests.emulator._support import ACCOUNT, KEY, MS_CV, OTHER_ACCOUNT, OTHER_KEY, V2021, bearer

SESSIONS_V1 = f"/v1/accounts/{ACCOUNT}/sessions"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(f"/accounts/{ACCOUNT}/token", {}, id="lower"),
        pytest.param(
            f"/Accounts/{ACCOUNT}/token", {"api-version": "2019-02-28-preview"}, id="seed-spelling"
        ),
    ],
)
async def test_sts_issues_a_jwt(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    """200 {"AccessToken": <JWT>}: PascalCase, no expiry field, exp in the JWT."""
    response = await client.get(
        path, params=params, headers={"Authorization": f"Bearer {ACCOUNT}:{KEY}"}
    )
    assert response.status_code == 200
    assert list(response.json()) == ["AccessToken"]
    assert MS_CV.match(response.headers["MS-CV"])
    payload = response.json()["AccessToken"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["accountId"] == ACCOUNT
    assert claims["exp"] - claims["iat"] == 24 * 3600


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": f"Bearer {ACCOUNT}:wrong-key"}, id="wrong-key"),
        pytest.param(
            {"Authorization": "Bearer 33333333-3333-3333-3333-333333333333:k"}, id="unknown-account"
        ),
    ],
)
async def test_sts_refuses_bad_credentials(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Wrong key, unknown account or no header: 401 with WWW-Authenticate."""
    response = await client.get(f"/accounts/{ACCOUNT}/token", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"]["code"] == "Unauthorized"
    assert MS_CV.match(response.headers["MS-CV"])


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer not-a-jwt", id="malformed"),
        pytest.param(f"Bearer {ACCOUNT}:{KEY}", id="account-key-instead-of-token"),
    ],
)
async def test_session_calls_need_a_valid_token(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    """Session calls without a valid token answer 401 invalid_token."""
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get(SESSIONS_V1, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_token_expires_after_24_hours(client: httpx.AsyncClient, clock: VirtualClock) -> None:
    """A token used past its 24 h life answers 401; a new one works."""
    auth = await bearer(client)
    clock.advance(24 * 3600)
    expired = await client.get(SESSIONS_V1, headers=auth)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    assert (await client.get(SESSIONS_V1, headers=await bearer(client))).status_code == 200


async def test_expire_tokens_mid_run(client: httpx.AsyncClient, emu: Emulator) -> None:
    """emu.expire_tokens() makes every issued token fail with 401."""
    auth = await bearer(client)
    assert (await client.get(SESSIONS_V1, headers=auth)).status_code == 200
    assert emu.expire_tokens() == 1
    assert (await client.get(SESSIONS_V1, headers=auth)).status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(SESSIONS_V1, id="v1"),
        pytest.param(f"/accounts/{ACCOUNT}/sessions?api-version=2021-01-01", id="2021-01-01"),
    ],
)
async def test_other_accounts_token_is_forbidden(client: httpx.AsyncClient, path: str) -> None:
    """A valid token of another account answers 403."""
    other = await bearer(client, OTHER_ACCOUNT, OTHER_KEY)
    response = await client.get(path, headers=other)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


async def test_accounts_are_isolated(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """A session of one account is not found through another."""
    await client.put(
        f"/accounts/{ACCOUNT}/sessions/mine",
        params=V2021,
        json={"maxLeaseTimeMinutes": 5, "size": "Standard"},
        headers=auth,
    )
    other = await bearer(client, OTHER_ACCOUNT, OTHER_KEY)
    response = await client.get(
        f"/accounts/{OTHER_ACCOUNT}/sessions/mine", params=V2021, headers=other
    )
    assert response.status_code == 404
