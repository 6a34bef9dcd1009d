"""Fixtures: an emulator on a virtual clock and an in-process client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from tests.emulator._support import ACCOUNT, KEY, OTHER_ACCOUNT, OTHER_KEY, START, bearer


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=START)


@pytest.fixture
def emu(clock: VirtualClock) -> Emulator:
    return Emulator({ACCOUNT: KEY, OTHER_ACCOUNT: OTHER_KEY}, clock=clock, seed=7)


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as c:
        yield c


@pytest.fixture
async def auth(client: httpx.AsyncClient) -> dict[str, str]:
    return await bearer(client)
