"""One HTTP connection pool per event loop and account, shared by every client in a process.

An :class:`~arr_prefect.client.ArrClient` is a light handle: every task call and every
``rendering_session`` may build one, and they all send through the same
``httpx.AsyncClient`` (its connection pool) for their event loop, account and endpoints.
Building a pool per client cost ~20 ms of CPU and ~1 MB each (``httpx`` loads the CA
bundle for every client, even for ``http://``) and opened new connections for every task.

- The pool is bounded (:data:`MAX_CONNECTIONS`): a thousand concurrent lifecycles queue
  for connections instead of opening a thousand sockets, so a 1024 open-file limit is
  never approached. They queue on the pool's own semaphore (:meth:`Pool.lane`), not
  inside httpcore, and each of the pool's connections is its own one-connection httpx
  client (a *lane*), lent to one request at a time. httpcore re-examines every queued
  request and every connection of a client (a ``poll`` and a ``getpeername`` per idle
  socket, and a list of all connections per idle one) whenever a request starts or ends:
  with a thousand queued requests, or 32 connections of which many are idle while this
  process is busy, that cost more CPU than the requests themselves (a thousand
  lifecycles that each list 1,000 sessions: 20.6 s of client CPU on one client of 32
  connections, 12.2 s on one of 8). A lane's client has one connection to examine.
- One :class:`ssl.SSLContext` (the CA bundle loaded once) serves every pool.
- A pool belongs to its event loop (asyncio connections cannot cross loops; Prefect may
  run tasks in several). It is closed when that loop shuts down its async generators
  (``asyncio.run`` and the test runners do), or by :func:`close_pools`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import httpx

__all__ = [
    "KEEPALIVE_SECONDS",
    "LISTS_AT_ONCE",
    "MAX_CONNECTIONS",
    "Pool",
    "PoolKey",
    "close_pools",
    "pool_for",
    "shared_ssl_context",
]

MAX_CONNECTIONS = 32
"""Most session requests one pool sends at once, each on its own connection (a lane);
further requests wait for a free one. The token fetch, which takes no lane, may open one
more.

Session management is light (a poll every few seconds per session): 32 requests in flight
answer a thousand sessions' polls with room to spare, even at a WAN round trip."""

KEEPALIVE_SECONDS = 4.0
"""How long an idle connection is kept for reuse. Shorter than the emulator's 5 s (and
httpx's default, which equals it): a request sent on a connection the server is closing
at that instant fails with a ReadError, which for a v1 create means reconciling."""

LISTS_AT_ONCE = 8
"""Most multi-page session lists one pool reads at once; further lists wait their turn.

A list holds every session it has read until its last page: a thousand lists of a
thousand sessions read side by side held a million Sessions (about 480 MB, and Python's
garbage collector scanning them all) where eight at a time hold at most 8,000. A list
takes a lane only for each page, as any request does."""

PoolKey = tuple[str, str, str]
"""(account id, session API base URL, STS base URL)."""

HEADERS = {"Accept": "application/json", "User-Agent": "arr-prefect/0.1"}


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The CA bundle, loaded once per process (loading it costs ~20 ms of CPU)."""
    return httpx.create_ssl_context()


@dataclass
class Pool:
    """Shared httpx clients: the lanes, the first of which also sends without a slot.

    :meth:`lane` lends one of at most ``slots`` clients of one connection each, most
    recently used first (its connection is the likeliest to be alive; the others'
    expire). ``http``, the first lane, also sends what must not wait for a slot (the
    token fetch: requests holding lanes may be waiting for it).
    """

    http: httpx.AsyncClient
    slots: asyncio.Semaphore
    closer: AsyncGenerator[None]
    idle: list[httpx.AsyncClient] = field(default_factory=list)
    lanes: list[httpx.AsyncClient] = field(default_factory=list)
    lists: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LISTS_AT_ONCE))
    """Taken by a whole session list (all its pages): see :data:`LISTS_AT_ONCE`."""

    @contextlib.asynccontextmanager
    async def lane(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client of one connection, this caller's alone until the block ends."""
        async with self.slots:
            if self.idle:
                http = self.idle.pop()
            else:  # fewer lanes than slots exist: every one is lent out
                http = _new_client(connections=1)
                self.lanes.append(http)
            try:
                yield http
            finally:
                self.idle.append(http)


_lock = threading.Lock()
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[PoolKey, Pool]] = (
    weakref.WeakKeyDictionary()
)


async def _close_with_loop(
    pools: dict[PoolKey, Pool],
    key: PoolKey,
    http: httpx.AsyncClient,
    lanes: list[httpx.AsyncClient],
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
        for client in lanes:  # the first is ``http``
            await client.aclose()


def _new_client(connections: int = MAX_CONNECTIONS) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=shared_ssl_context(),
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
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
        # The first lane is also the client of requests that take no slot (the token): a
        # token fetched for a request about to be sent on it then shares its connection.
        # Two connections: a token from another host need not close the service's.
        http = _new_client(connections=2)
        lanes: list[httpx.AsyncClient] = [http]
        closer = _close_with_loop(pools, key, http, lanes)
        pool = pools[key] = Pool(
            http, asyncio.Semaphore(MAX_CONNECTIONS), closer, idle=[http], lanes=lanes
        )
    await anext(closer)  # registers the closer with the loop's async-generator hooks
    return pool


async def close_pools() -> None:
    """Close every pool of the running loop (they are made again on next use)."""
    with _lock:
        pools = list(_pools.get(asyncio.get_running_loop(), {}).values())
    for pool in pools:
        await pool.closer.aclose()
