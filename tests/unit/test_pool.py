"""The shared connection pool: bounded, and never reusing a connection the server drops."""

from __future__ import annotations

from arr_prefect._pool import KEEPALIVE_SECONDS, MAX_CONNECTIONS, pool_for
from arr_prefect.emulator.server import FrontEndLimits


async def test_pool_is_bounded_and_expires_idle_connections_first() -> None:
    """At most MAX_CONNECTIONS at once, and idle ones dropped before the emulator drops them
    (a request racing the server's close fails, and a v1 create then has to reconcile)."""
    pool = await pool_for(("account", "http://127.0.0.1:9", "http://127.0.0.1:9"))
    transport_pool = pool.http._transport._pool  # type: ignore[attr-defined]
    assert transport_pool._max_connections == MAX_CONNECTIONS
    assert transport_pool._keepalive_expiry == KEEPALIVE_SECONDS
    assert FrontEndLimits().keep_alive_timeout > KEEPALIVE_SECONDS
    assert await pool_for(("account", "http://127.0.0.1:9", "http://127.0.0.1:9")) is pool
