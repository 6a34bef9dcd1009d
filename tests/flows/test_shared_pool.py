"""One connection pool per process and account: every task call and client shares it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from prefect import flow
from starlette.types import ASGIApp, Receive, Scope, Send

from arr_prefect import tasks
from arr_prefect.client import ArrClient
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.emulator.server import serve_in_thread


class ConnectionCounter:
    """Wraps an ASGI app; notes the client address of every request (one per connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.peers: set[tuple[str, int]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            host, port = scope["client"]
            self.peers.add((host, port))
        await self.app(scope, receive, send)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Emulator, ConnectionCounter]]:
    """The emulator over loopback HTTP, and ARR_* pointing every task's client at it."""
    emu = Emulator(startup_seconds=0)
    counter = ConnectionCounter(emu.app)
    with serve_in_thread(counter) as url:
        for name, value in {
            "ARR_ACCOUNT_ID": DEFAULT_ACCOUNT_ID,
            "ARR_ACCOUNT_KEY": DEFAULT_ACCOUNT_KEY,
            "ARR_SERVICE_URL": url,
            "ARR_STS_URL": url,
            "ARR_API_VERSION": "2021-01-01",
            "ARR_POLL_INTERVAL": "0.05",
        }.items():
            monkeypatch.setenv(name, value)
        yield emu, counter
    assert emu.running() == []


async def test_every_task_call_shares_one_connection(
    served: tuple[Emulator, ConnectionCounter],
) -> None:
    """Six task calls, each building its own client, reuse one pooled connection."""
    emu, counter = served

    @flow
    async def lifecycle() -> str:
        session = await tasks.create_session(lease=timedelta(minutes=10))
        await tasks.wait_until_ready(session.id)
        await tasks.extend_session(session.id, extend_by=timedelta(minutes=10))
        await tasks.get_session(session.id)
        await tasks.list_sessions()
        await tasks.stop_session(session.id)
        return session.id

    sid = await lifecycle()
    assert emu.sessions()[0].id == sid
    assert len(counter.peers) == 1, counter.peers


async def test_clients_of_one_account_share_the_pool(
    served: tuple[Emulator, ConnectionCounter],
) -> None:
    """Clients built side by side send through one pool, and closing one leaves it open."""
    _, counter = served
    first, second = ArrClient(), ArrClient()
    await first.list_sessions()
    await first.aclose()
    await second.list_sessions()
    assert len(counter.peers) == 1, counter.peers
