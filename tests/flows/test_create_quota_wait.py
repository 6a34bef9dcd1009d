"""rendering_session and the account's quota: a create refused with 403 QuotaExceeded waits
for the quota (``ARR_QUOTA_WAIT``) with only its attempts shielded from cancellation, so
a cancel ends the wait at once; a cancel that comes during a refused attempt lands as the
refusal comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient, use_client_factory
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, Emulator
from arr_prefect.flows import rendering_session
from arr_prefect.flows.report import SessionReport
from arr_prefect.models import SessionSize
from arr_prefect.settings import ArrSettings

pytestmark = pytest.mark.usefixtures("arr")

LEASE = timedelta(minutes=10)


@pytest.fixture
def blocker(emulator: Emulator, clock: VirtualClock, settings: ArrSettings) -> Iterator[str]:
    """A quota of one, held by a session made outside the flow (stopped at the end)."""
    emulator.state.max_sessions = 1
    state = emulator.state
    record = (
        state.create_v1(DEFAULT_ACCOUNT_ID, size=SessionSize.STANDARD, max_lease=LEASE)
        if settings.api_version == "v1"
        else state.create_v2021(
            DEFAULT_ACCOUNT_ID, "blocker", size=SessionSize.STANDARD, max_lease_minutes=10
        )[0]
    )
    yield record.id
    state.stop(DEFAULT_ACCOUNT_ID, record.id)


def create_refusals(emulator: Emulator) -> int:
    return int(emulator.ledger()["quota_refusals"])


async def _use_a_session(report: SessionReport | None = None) -> str:
    async with rendering_session(lease=LEASE, report=report) as session:
        return session.id


async def refused(emulator: Emulator, clock: VirtualClock, times: int) -> None:
    """Until the service has refused ``times`` creates: steps of the clock, bounded in real
    time so that a create never sent fails the test instead of hanging it."""
    deadline = time.monotonic() + 60
    while create_refusals(emulator) < times:
        assert time.monotonic() < deadline, f"{times} quota refusal(s) not seen in 60 s"
        await clock.sleep(1)


async def test_the_create_waits_for_a_session_to_end(
    emulator: Emulator, clock: VirtualClock, blocker: str
) -> None:
    """The create waits while the quota is full and creates once the other session stops;
    the session bills from the request that made it, not from the wait."""
    report = SessionReport()
    stopped_at: list[float] = []

    async def stop_blocker() -> None:
        await refused(emulator, clock, 2)
        emulator.state.stop(DEFAULT_ACCOUNT_ID, blocker)
        stopped_at.append(clock.time())

    stopping = asyncio.create_task(stop_blocker())
    session_id = await _use_a_session(report)
    await stopping
    assert session_id != blocker
    assert create_refusals(emulator) == 2
    assert report.created_at is not None
    assert report.created_at >= stopped_at[0]
    [record] = [r for r in emulator.sessions() if r.id == session_id]
    assert record.end_reason == "stopped"


async def test_a_cancel_ends_the_wait_for_the_quota_at_once(
    emulator: Emulator, clock: VirtualClock, blocker: str
) -> None:
    """Cancelled while it waits for the quota, the session's create ends then (not when
    ARR_QUOTA_WAIT runs out) and nothing more is sent or created.

    Outside a flow run only: inside one, the virtual clock jumps ahead while the run waits
    on its Prefect API in real time, and a clean-clone CI run hung in that variant."""

    async def cancelled_while_waiting() -> float:
        waiting = asyncio.create_task(_use_a_session())
        await refused(emulator, clock, 1)
        assert not waiting.done()
        waiting.cancel()
        cancel_at = clock.time()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return clock.time() - cancel_at

    after = await cancelled_while_waiting()
    assert after == 0
    tries = create_refusals(emulator)
    assert tries == 1
    await clock.sleep(900)
    assert create_refusals(emulator) == tries
    assert [r.id for r in emulator.sessions()] == [blocker]


class SlowCreates(httpx.AsyncBaseTransport):
    """The emulator, with every create's answer taking ``seconds`` of the clock."""

    def __init__(self, emulator: Emulator, clock: VirtualClock, seconds: float) -> None:
        self.inner = emulator.transport()
        self.clock = clock
        self.seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" or request.url.path.lower().endswith("/create"):
            await self.clock.sleep(self.seconds)
        return await self.inner.handle_async_request(request)


@contextlib.contextmanager
def slow_creates(emulator: Emulator, clock: VirtualClock, settings: ArrSettings) -> Iterator[None]:
    transport = SlowCreates(emulator, clock, 5)
    cache = TokenCache()

    def factory(chosen: ArrSettings | None = None) -> ArrClient:
        return ArrClient(chosen or settings, transport=transport, clock=clock, token_cache=cache)

    with use_client_factory(factory):
        yield


async def test_a_cancel_during_a_refused_attempt_lands_with_the_refusal(
    emulator: Emulator, clock: VirtualClock, settings: ArrSettings, blocker: str
) -> None:
    """A cancel that comes while an attempt is out is held until its answer (the ID must
    be learnt if a session was made); the answer is a refusal, so the cancel lands then,
    without a wait for the quota."""
    with slow_creates(emulator, clock, settings):
        started = clock.time()
        waiting = asyncio.create_task(_use_a_session())
        await clock.sleep(2)  # the first attempt is out for 5 s
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert clock.time() - started == pytest.approx(5)
    assert create_refusals(emulator) == 1
    assert [r.id for r in emulator.sessions()] == [blocker]
