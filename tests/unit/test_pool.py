"""The shared connection pool: bounded, and never reusing a connection the server drops."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from arr_prefect._pool import (
    KEEPALIVE_SECONDS,
    LISTS_AT_ONCE,
    MAX_CONNECTIONS,
    close_pools,
    pool_for,
)
from arr_prefect.client import ArrClient
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.emulator.server import FrontEndLimits, serve_in_thread
from arr_prefect.settings import load_settings

KEY = ("account", "http://127.0.0.1:9", "http://127.0.0.1:9")


def transport_pool(http: httpx.AsyncClient) -> Any:
    return http._transport._pool  # type: ignore[attr-defined]  # httpcore's own pool


async def test_pool_is_bounded_and_expires_idle_connections_first() -> None:
    """At most MAX_CONNECTIONS lanes of one connection each, and idle ones dropped before the
    emulator drops them (a request racing the server's close fails, and a v1 create then
    has to reconcile)."""
    pool = await pool_for(KEY)
    in_use = 0
    most = 0
    release = asyncio.Event()

    async def hold() -> httpx.AsyncClient:
        nonlocal in_use, most
        async with pool.lane() as http:
            in_use += 1
            most = max(most, in_use)
            await release.wait()
            in_use -= 1
            return http

    holders = [asyncio.create_task(hold()) for _ in range(MAX_CONNECTIONS + 10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert in_use == MAX_CONNECTIONS
    release.set()
    lent = await asyncio.gather(*holders)
    assert most == MAX_CONNECTIONS
    assert len(pool.lanes) == MAX_CONNECTIONS
    assert set(map(id, lent)) == set(map(id, pool.lanes))
    assert pool.lanes[0] is pool.http
    for lane in pool.lanes[1:]:
        assert transport_pool(lane)._max_connections == 1
    for lane in pool.lanes:
        assert transport_pool(lane)._keepalive_expiry == KEEPALIVE_SECONDS
    assert FrontEndLimits().keep_alive_timeout > KEEPALIVE_SECONDS
    assert await pool_for(KEY) is pool


async def test_the_last_lane_returned_is_lent_first() -> None:
    """Lanes are lent most recently used first, so one connection serves sequential calls."""
    pool = await pool_for(KEY)
    async with pool.lane() as first:
        pass
    async with pool.lane() as again:
        pass
    assert again is first


class SlowLists:
    """Wraps an ASGI app: list requests take 20 ms, and the most at once is noted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.listing = 0
        self.most = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_list = scope["type"] == "http" and scope["path"].endswith("/sessions")
        if not is_list:
            await self.app(scope, receive, send)
            return
        self.listing += 1
        self.most = max(self.most, self.listing)
        try:
            await asyncio.sleep(0.02)
            await self.app(scope, receive, send)
        finally:
            self.listing -= 1


async def test_lists_wait_their_turn() -> None:
    """At most LISTS_AT_ONCE session lists are read at once per pool (each holds what it
    has read until its last page); other requests are not held back by them."""
    emulator = Emulator(startup_seconds=0)
    slow = SlowLists(emulator.app)
    with serve_in_thread(slow) as url:
        settings = load_settings(
            _env_file=None,
            account_id=DEFAULT_ACCOUNT_ID,
            account_key=DEFAULT_ACCOUNT_KEY,
            service_url=url,
            sts_url=url,
            api_version="2021-01-01",
        )
        arr = ArrClient(settings)
        await arr.get_access_token()
        lists = [asyncio.create_task(arr.list_sessions()) for _ in range(LISTS_AT_ONCE * 3)]
        # A create meanwhile takes a lane at once, not after the lists.
        session = await arr.create_session(lease=15)
        assert not all(task.done() for task in lists)
        answers = await asyncio.gather(*lists)
        assert {len(answer) for answer in answers} <= {0, 1}  # before or after the create
        await arr.stop_session(session.id)
        await close_pools()  # the pool belongs to this test's loop and server
    assert slow.most == LISTS_AT_ONCE
