"""A create refused for the account's session quota (403 ``QuotaExceeded``) waits for it.

Against the in-process emulator (``Emulator(max_sessions=...)``) sharing a VirtualClock
with the client (autojump): minutes of waiting take no real time, and the clock's reading
says exactly how long the client waited.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from arr_prefect import QuotaExceededError
from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.errors import AuthenticationError, ConfigurationError
from arr_prefect.models import Session
from arr_prefect.settings import load_settings

START = 1_700_000_000.0
V1 = "v1"
V2021 = "2021-01-01"
BOTH = [pytest.param(V1, id="v1"), pytest.param(V2021, id="2021")]
LEASE = timedelta(minutes=20)
WAIT_LOG = re.compile(
    r"create session: account at its session quota \(403 QuotaExceeded\); trying again in"
    r" (?P<delay>[\d.]+ s|\d+ min(?: \d+ s)?) \((?P<waited>[\d.]+ s|\d+ min(?: \d+ s)?) of"
    r" (?P<budget>.+) waited\)"
)
"""The house style: durations with units (``1 min 40 s``), never a raw float."""


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START, autojump=True)


@pytest.fixture
def emu(clock: VirtualClock) -> Emulator:
    return Emulator(clock=clock, seed=3, max_sessions=1)


def waited(clock: VirtualClock) -> float:
    return clock.time() - START


def make_client(
    transport: httpx.AsyncBaseTransport,
    clock: VirtualClock,
    api_version: str = V1,
    **overrides: Any,
) -> ArrClient:
    settings = load_settings(
        _env_file=None,
        account_id=DEFAULT_ACCOUNT_ID,
        account_key=DEFAULT_ACCOUNT_KEY,
        service_url="http://127.0.0.1:9",
        sts_url="http://127.0.0.1:9",
        api_version=api_version,
        **overrides,
    )
    return ArrClient(settings, transport=transport, clock=clock, token_cache=TokenCache())


@pytest.fixture
async def arr(emu: Emulator, clock: VirtualClock) -> AsyncIterator[ArrClient]:
    async with make_client(emu.transport(), clock) as client:
        yield client


REAL_SECONDS = 10.0
"""A real-time bound on each test's waiting (``asyncio.timeout`` reads the loop's clock, not
the VirtualClock): a wait that never ends fails the test instead of hanging it."""


async def create(arr: ArrClient, **kwargs: Any) -> Session:
    """``arr.create_session(**kwargs)``, failing after :data:`REAL_SECONDS` of real time."""
    async with asyncio.timeout(REAL_SECONDS):
        return await arr.create_session(**kwargs)


def refusals(emu: Emulator) -> int:
    return int(emu.ledger()["quota_refusals"])


async def create_once_stopped(
    arr: ArrClient, clock: VirtualClock, first: Session, after: float, **kwargs: Any
) -> Session:
    """Create a session while ``first`` holds the quota and is stopped ``after`` seconds
    (on ``clock``) into the wait."""

    async def stop_later() -> None:
        await clock.sleep(after)
        await arr.stop_session(first.id)

    stopper = asyncio.create_task(stop_later())
    made = await create(arr, **kwargs)
    await stopper
    return made


@pytest.mark.parametrize("api_version", BOTH)
async def test_create_waits_until_a_session_ends(
    emu: Emulator, clock: VirtualClock, api_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused at the quota, the create is sent again and succeeds once a session stops."""
    caplog.set_level(logging.WARNING, logger="arr_prefect.client")
    async with make_client(emu.transport(), clock, api_version) as arr:
        first = await create(arr, lease=LEASE)
        second = await create_once_stopped(arr, clock, first, 100, lease=LEASE)
    assert second.id != first.id
    # Waits of 5, 10, 20, 30, 30... s (jittered down by at most a quarter): the try after
    # the stop at 100 s comes within one longest wait of it.
    assert 100 <= waited(clock) <= 130
    assert refusals(emu) >= 4
    assert emu.ledger()["running"] == 1
    waits = [WAIT_LOG.fullmatch(r.getMessage()) for r in caplog.records]
    assert waits
    assert all(waits), [r.getMessage() for r in caplog.records]
    assert {m["budget"] for m in waits if m} == {"10 min"}
    assert len(waits) == refusals(emu)


async def test_v1_session_made_after_waiting_carries_its_attempt_lease(
    emu: Emulator, clock: VirtualClock, arr: ArrClient
) -> None:
    """v1: the session made by a later attempt is returned with that attempt's fingerprinted
    lease, the one the service lists (what a lost answer's reconciliation looks for)."""
    first = await create(arr, lease=LEASE)
    second = await create_once_stopped(arr, clock, first, 40, lease=LEASE)
    listed = {s.id: s.max_lease for s in await arr.list_sessions()}
    assert listed == {second.id: second.max_lease}
    assert second.max_lease is not None
    assert abs(second.max_lease - LEASE) < timedelta(seconds=1)


async def test_2021_create_keeps_its_chosen_id_while_waiting(
    emu: Emulator, clock: VirtualClock
) -> None:
    """2021-01-01: the ID the caller chose is the one finally created."""
    async with make_client(emu.transport(), clock, V2021) as arr:
        first = await create(arr, lease=LEASE)
        second = await create_once_stopped(arr, clock, first, 15, lease=LEASE, session_id="job-7")
    assert second.id == "job-7"
    assert emu.request_count("v2021.create", 403) >= 1


@pytest.mark.parametrize("api_version", BOTH)
async def test_create_gives_up_after_the_quota_wait(
    emu: Emulator, clock: VirtualClock, api_version: str
) -> None:
    """After ARR_QUOTA_WAIT the refusal is raised as QuotaExceededError, saying what to do."""
    async with make_client(emu.transport(), clock, api_version, quota_wait=150) as arr:
        await create(arr, lease=LEASE)
        with pytest.raises(QuotaExceededError) as info:
            await create(arr, lease=LEASE)
    error = info.value
    # The last try is made at the deadline, not one wait before or after it.
    assert waited(clock) == pytest.approx(150)
    assert error.waited == pytest.approx(150)
    assert not isinstance(error, AuthenticationError)
    assert (error.status_code, error.code) == (403, "QuotaExceeded")
    message = str(error)
    assert "HTTP 403 QuotaExceeded: The account has reached its quota of 1" in message
    assert "after waiting 2 min 30 s for a session to end (ARR_QUOTA_WAIT)" in message
    assert "`arr sessions list`, then `arr sessions stop <id>`" in message
    assert "raise the account's quota" in message
    assert emu.ledger()["running"] == 1


@pytest.mark.parametrize("api_version", BOTH)
async def test_quota_wait_zero_raises_at_once(
    emu: Emulator, clock: VirtualClock, api_version: str
) -> None:
    """ARR_QUOTA_WAIT=0: the first refusal is raised, with no wait and no second try."""
    async with make_client(emu.transport(), clock, api_version, quota_wait=0) as arr:
        await create(arr, lease=LEASE)
        with pytest.raises(QuotaExceededError) as info:
            await create(arr, lease=LEASE)
    assert waited(clock) == 0
    assert refusals(emu) == 1
    assert info.value.waited is None
    assert "after waiting" not in str(info.value)
    assert "The account is at its session quota: wait for sessions to end" in str(info.value)


async def test_a_cancel_ends_the_wait_at_once(
    emu: Emulator, clock: VirtualClock, arr: ArrClient
) -> None:
    """A create waiting for the quota is cancelled like any sleep: nothing is created."""
    await create(arr, lease=LEASE)
    waiting = asyncio.create_task(arr.create_session(lease=LEASE))
    await clock.sleep(50)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waited(clock) == 50
    tries = refusals(emu)
    await clock.sleep(600)
    assert refusals(emu) == tries, "the cancelled create went on trying"
    assert len(emu.ledger()["sessions"]) == 1


def _scripted(
    *answers: httpx.Response, slow: tuple[VirtualClock, float] | None = None
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A service whose token call succeeds and whose creates get ``answers`` in order, the
    last one ever after; ``slow``: each create takes that many seconds of that clock."""
    queue = list(answers)
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"AccessToken": "header.e30.sig-SECRET-TOKEN"})
        sent.append(request)
        if slow is not None:
            slow[0].advance(slow[1])
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        # A response object cannot be sent twice: a copy of it.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.MockTransport(handle), sent


def _refusal(code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        403,
        json={"error": {"code": code, "message": "refused"}},
        headers={"MS-CV": "CV-Q.1", **(headers or {})},
    )


@pytest.mark.parametrize(
    ("quota_wait", "tries", "says"),
    [
        pytest.param(0, 1, None, id="no-wait"),
        pytest.param(10, 3, "after waiting 13 s", id="10-s"),
    ],
)
async def test_the_wait_counts_from_the_first_refusal(
    clock: VirtualClock, quota_wait: float, tries: int, says: str | None
) -> None:
    """Time spent sending the first create is no waiting for the quota: with a 3 s create,
    ARR_QUOTA_WAIT=0 raises the refusal as it is, and 10 s are counted from the refusal."""
    transport, sent = _scripted(
        _refusal("QuotaExceeded", {"Retry-After": "3.5"}), slow=(clock, 3.0)
    )
    async with make_client(transport, clock, quota_wait=quota_wait) as arr:
        with pytest.raises(QuotaExceededError) as info:
            await create(arr, lease=LEASE)
    # 3 s to the first refusal; then waits of 3.5 s and tries of 3 s, the last wait cut
    # short to end at the deadline.
    assert waited(clock) == pytest.approx(3 + quota_wait + (3 if quota_wait else 0))
    assert len(sent) == tries
    assert info.value.waited == (pytest.approx(quota_wait + 3) if quota_wait else None)
    if says is None:
        assert "after waiting" not in str(info.value)
    else:
        assert says in str(info.value)


async def test_retry_after_is_honoured(clock: VirtualClock) -> None:
    """A refusal's Retry-After sets the wait before the next try."""
    transport, sent = _scripted(
        _refusal("QuotaExceeded", {"Retry-After": "42"}),
        httpx.Response(202, json={"sessionId": "e13d2c44-63e0-4591-991e-f9e05e599a93"}),
    )
    async with make_client(transport, clock) as arr:
        session = await create(arr, lease=LEASE)
    assert session.id == "e13d2c44-63e0-4591-991e-f9e05e599a93"
    assert waited(clock) == 42
    assert len(sent) == 2


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("Forbidden", id="forbidden"),
        pytest.param("AuthenticationFailed", id="authentication-failed"),
        pytest.param(None, id="no-code"),
    ],
)
async def test_other_403s_stay_authentication_errors(clock: VirtualClock, code: str | None) -> None:
    """A 403 whose code is not QuotaExceeded is an AuthenticationError, raised at once."""
    answer = (
        _refusal(code)
        if code is not None
        else httpx.Response(403, text="Forbidden", headers={"MS-CV": "CV-Q.1"})
    )
    transport, sent = _scripted(answer)
    async with make_client(transport, clock) as arr:
        with pytest.raises(AuthenticationError) as info:
            await create(arr, lease=LEASE)
    assert not isinstance(info.value, QuotaExceededError)
    assert waited(clock) == 0
    assert len(sent) == 1


async def test_the_error_holds_no_secret_and_survives_pickling(clock: VirtualClock) -> None:
    """Neither the key nor the token shows in the error; a pickled copy keeps its figures."""
    transport, _ = _scripted(_refusal("QuotaExceeded"))
    async with make_client(transport, clock, quota_wait=5) as arr:
        with pytest.raises(QuotaExceededError) as info:
            await create(arr, lease=LEASE)
    error = info.value
    for text in (str(error), repr(error), repr(error.args), repr(error.__dict__)):
        assert DEFAULT_ACCOUNT_KEY not in text
        assert "SECRET-TOKEN" not in text
    assert "CV-Q.1" in str(error)
    # Prefect pickles exceptions into states; the bytes are our own, made just above.
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301
    assert (type(copy), str(copy), copy.waited) == (QuotaExceededError, str(error), 5)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(None, 600.0, id="default-10-min"),
        pytest.param("0", 0.0, id="disabled"),
        pytest.param("1800", 1800.0, id="half-an-hour"),
    ],
)
def test_quota_wait_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float
) -> None:
    """ARR_QUOTA_WAIT is seconds; 10 min by default; 0 disables the wait."""
    if value is not None:
        monkeypatch.setenv("ARR_QUOTA_WAIT", value)
    assert load_settings(_env_file=None).quota_wait == seconds


@pytest.mark.parametrize(
    "value", [pytest.param("-1", id="negative"), pytest.param("soon", id="text")]
)
def test_quota_wait_setting_refuses_nonsense(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A negative or unreadable ARR_QUOTA_WAIT is a ConfigurationError naming the field."""
    monkeypatch.setenv("ARR_QUOTA_WAIT", value)
    with pytest.raises(ConfigurationError, match="quota_wait"):
        load_settings(_env_file=None)
