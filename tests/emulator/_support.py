"""Shared constants and helpers for the emulator tests."""

from __future__ import annotations

import re

import httpx

from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY

ACCOUNT = DEFAULT_ACCOUNT_ID
KEY = DEFAULT_ACCOUNT_KEY
OTHER_ACCOUNT = "22222222-2222-2222-2222-222222222222"
OTHER_KEY = "other-account-key"
V2021 = {"api-version": "2021-01-01"}
START = 1_700_000_000.0
MS_CV = re.compile(r"^[A-Za-z0-9+/]{22}\.0$")
V1_CREATE_BODY = {"maxLeaseTime": "4:0:0", "models": [], "size": "standard"}


async def fetch_token(client: httpx.AsyncClient, account: str = ACCOUNT, key: str = KEY) -> str:
    response = await client.get(
        f"/accounts/{account}/token", headers={"Authorization": f"Bearer {account}:{key}"}
    )
    assert response.status_code == 200, response.text
    token = response.json()["AccessToken"]
    assert isinstance(token, str)
    return token


async def bearer(
    client: httpx.AsyncClient, account: str = ACCOUNT, key: str = KEY
) -> dict[str, str]:
    return {"Authorization": f"Bearer {await fetch_token(client, account, key)}"}


async def v1_create(
    client: httpx.AsyncClient, headers: dict[str, str], lease: str = "4:0:0"
) -> str:
    response = await client.post(
        f"/v1/accounts/{ACCOUNT}/sessions/create",
        json={"maxLeaseTime": lease, "models": [], "size": "standard"},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    assert isinstance(session_id, str)
    return session_id


async def v2021_put(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session_id: str,
    minutes: int = 15,
    size: str = "Standard",
) -> httpx.Response:
    return await client.put(
        f"/accounts/{ACCOUNT}/sessions/{session_id}",
        params=V2021,
        json={"maxLeaseTimeMinutes": minutes, "size": size},
        headers=headers,
    )
