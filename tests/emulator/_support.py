"""Shared constants and helpers for the emulator tests."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    chunks: Sequence[bytes] = (b"",),
    hang_up: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """Drive the ASGI app with a hand-built request: any path (control characters too), the
    body in ``chunks``, and with ``hang_up`` the client gone before the body ends.

    Returns (status, headers with lower-case names, body).
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("emulator", 80),
    }
    pending: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": hang_up or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    response_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], response_headers, body
