"""One HTTP connection pool per event loop and account, shared by every client in a process.

An :class:`~arr_prefect.client.ArrClient` is a light handle: every task call and every
``rendering_session`` may build one, and they all send through the same
``httpx.AsyncClient`` (its connection pool) for their event loop, account and endpoints.
Building a pool per client cost ~20 ms of CPU and ~1 MB each (``httpx`` loads the CA
bundle for every client, even for ``http://``) and opened new connections for every task.

- The pool is bounded (:data:`MAX_CONNECTIONS`): a thousand concurrent lifecycles queue
  for connections instead of opening a thousand sockets, so a 1024 open-file limit is
  never approached. They queue on the pool's :attr:`Pool.slots` semaphore, not inside
  httpcore: httpcore re-examines every queued request and every connection (polling each
  idle socket) whenever one request finishes, which with a thousand queued requests cost
  more CPU than the requests themselves.
- One :class:`ssl.SSLContext` (the CA bundle loaded once) serves every pool.
- A pool belongs to its event loop (asyncio connections cannot cross loops; Prefect may
  run tasks in several). It is closed when that loop shuts down its async generators
  (``asyncio.run`` and the test runners do), or by :func:`close_pools`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx

__all__ = [
    "KEEPALIVE_SECONDS",
    "MAX_CONNECTIONS",
    "Pool",
    "PoolKey",
    "close_pools",
    "pool_for",
    "shared_ssl_context",
]

MAX_CONNECTIONS = 32
"""Most connections one pool opens at once; further requests wait for a free one.

Session management is light (a poll every few seconds per session): 32 requests in flight
answer a thousand sessions' polls with room to spare, even at a WAN round trip."""

KEEPALIVE_SECONDS = 4.0
"""How long an idle connection is kept for reuse. Shorter than the emulator's 5 s (and
httpx's default, which equals it): a request sent on a connection the server is closing
at that instant fails with a ReadError, which for a v1 create means reconciling."""

PoolKey = tuple[str, str, str]
"""(account id, session API base URL, STS base URL)."""

HEADERS = {"Accept": "application/json", "User-Agent": "arr-prefect/0.1"}


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The CA bundle, loaded once per process (loading it costs ~20 ms of CPU)."""
    return httpx.create_ssl_context()


@dataclass
class Pool:
    """A shared ``httpx.AsyncClient`` and the slots that bound the requests sent through it."""

    http: httpx.AsyncClient
    slots: asyncio.Semaphore
    closer: AsyncGenerator[None]


_lock = threading.Lock()
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[PoolKey, Pool]] = (
    weakref.WeakKeyDictionary()
)


async def _close_with_loop(
    pools: dict[PoolKey, Pool], key: PoolKey, http: httpx.AsyncClient
) -> AsyncGenerator[None]:
    # An async generator the loop finalizes at shutdown (loop.shutdown_asyncgens): the
    # only hook asyncio offers to run code in a loop before it closes.
    try:
        yield
    finally:
        with _lock:
            current = pools.get(key)
            if current is not None and current.http is http:
                del pools[key]
        await http.aclose()


def _new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=shared_ssl_context(),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        headers=HEADERS,
        follow_redirects=False,
    )


async def pool_for(key: PoolKey) -> Pool:
    """The running loop's pool for ``key`` (made on first use)."""
    loop = asyncio.get_running_loop()
    with _lock:
        pools = _pools.setdefault(loop, {})
        pool = pools.get(key)
        if pool is not None and not pool.http.is_closed:
            return pool
        http = _new_client()
        closer = _close_with_loop(pools, key, http)
        pool = pools[key] = Pool(http, asyncio.Semaphore(MAX_CONNECTIONS), closer)
    await anext(closer)  # registers the closer with the loop's async-generator hooks
    return pool


async def close_pools() -> None:
    """Close every pool of the running loop (they are made again on next use)."""
    with _lock:
        pools = list(_pools.get(asyncio.get_running_loop(), {}).values())
    for pool in pools:
        await pool.closer.aclose()
