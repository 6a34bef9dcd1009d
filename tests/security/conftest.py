"""Security tests: a distinctive account key, an emulator on a virtual clock, and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.settings import ArrSettings, load_settings

ACCOUNT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ACCOUNT_KEY = "K3y-7f3a9c51-must-never-be-seen-Zq"
OTHER_ACCOUNT_ID = "99999999-8888-4777-8666-555555555555"
OTHER_ACCOUNT_KEY = "other-account-key-4d2e"
BASE_URL = "http://127.0.0.1:9"  # never dialled: the emulator's ASGI transport answers


def make_settings(api_version: str = "v1", **overrides: Any) -> ArrSettings:
    """Settings for :data:`ACCOUNT_ID` on the in-process emulator."""
    values: dict[str, Any] = {
        "account_id": ACCOUNT_ID,
        "account_key": ACCOUNT_KEY,
        "service_url": BASE_URL,
        "sts_url": BASE_URL,
        "api_version": api_version,
        **overrides,
    }
    return load_settings(_env_file=None, **values)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Delegates to the emulator, and keeps every access token the STS hands out."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.tokens: list[str] = []
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/token") and response.status_code == 200:
            body = await response.aread()
            token = httpx.Response(200, content=body).json().get("AccessToken")
            if isinstance(token, str):
                self.tokens.append(token)
            return httpx.Response(
                response.status_code, headers=response.headers, content=body, request=request
            )
        return response


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(autojump=True)


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[Emulator]:
    """An emulator serving two accounts; no session may be left running."""
    emu = Emulator(
        {ACCOUNT_ID: ACCOUNT_KEY, OTHER_ACCOUNT_ID: OTHER_ACCOUNT_KEY},
        clock=clock,
        startup_seconds=60,
        token_lifetime=3600,
        seed=7,
    )
    yield emu
    assert emu.running() == []


@pytest.fixture
def recording(emulator: Emulator) -> RecordingTransport:
    return RecordingTransport(emulator.transport())


def make_client(
    api_version: str, transport: httpx.AsyncBaseTransport, clock: VirtualClock, **overrides: Any
) -> ArrClient:
    """A client of :data:`ACCOUNT_ID` with its own token cache."""
    return ArrClient(
        make_settings(api_version, **overrides),
        transport=transport,
        clock=clock,
        token_cache=TokenCache(),
    )
