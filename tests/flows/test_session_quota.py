"""The account's session quota: a leased slot of a Prefect global concurrency limit, held by
``rendering_session`` from before the create until after the stop (quota.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prefect import flow, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import ScaledClock
from arr_prefect.emulator import Emulator
from arr_prefect.errors import ArrError
from arr_prefect.flows import (
    OWNER_TAG_PREFIX,
    RenderSummary,
    SessionReport,
    quota,
    render_batch,
    rendering_session,
)
from arr_prefect.flows import events as events_module
from arr_prefect.flows.quota import (
    SLOT_CALLS_AT_ONCE,
    SLOT_WAIT_ARTIFACT_KEY,
    SessionSlot,
    SlotWaitTimeoutError,
    session_limit_name,
    slot_return_bound,
)
from arr_prefect.settings import ArrSettings
from tests.flows.conftest import make_settings

pytestmark = pytest.mark.usefixtures("arr")


@pytest.fixture
def api_version() -> str:
    """The quota does not depend on the API version (the create's failure path does)."""
    return "v1"


@pytest.fixture
def limit_name() -> str:
    """A limit of this test's own (the tests share one Prefect database)."""
    return f"arr-sessions-test-{uuid4().hex[:12]}"


@pytest.fixture
def settings(api_version: str, limit_name: str) -> ArrSettings:
    return make_settings(api_version, session_limit=limit_name)


async def create_limit(name: str, limit: int) -> None:
    async with get_client() as prefect:
        await prefect.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=limit)
        )


async def slots_in_use(name: str) -> int:
    async with get_client() as prefect:
        return (await prefect.read_global_concurrency_limit_by_name(name)).active_slots


@pytest.fixture
async def held_slot(limit_name: str) -> AsyncIterator[dict[str, Any]]:
    """A limit of 1 whose only slot someone else holds; ``release()`` frees it."""
    await create_limit(limit_name, 1)
    async with get_client() as prefect:
        response = await prefect.increment_concurrency_slots_with_lease(
            names=[limit_name], slots=1, mode="concurrency", lease_duration=60
        )
    lease_id = UUID(response.json()["lease_id"])

    async def release() -> None:
        async with get_client() as prefect:
            await prefect.release_concurrency_slots_with_lease(lease_id=lease_id)

    yield {"release": release}
    await release()


async def test_a_slot_is_held_while_the_session_lives(limit_name: str, emulator: Emulator) -> None:
    """The slot is taken before the create and given back after the stop."""
    await create_limit(limit_name, 2)
    report = SessionReport()

    @flow
    async def one() -> int:
        async with rendering_session(lease=timedelta(minutes=10), report=report):
            return await slots_in_use(limit_name)

    assert await one() == 1
    assert await slots_in_use(limit_name) == 0
    assert report.slot_limit == limit_name
    assert report.slot_wait_seconds is not None
    assert report.slot_wait_seconds < 1
    assert emulator.ledger()["sessions"][0]["status"] == "Stopped"


async def test_no_limit_no_quota(limit_name: str, emulator: Emulator) -> None:
    """Without a limit of that name the session is created at once and nothing is held."""
    report = SessionReport()

    @flow
    async def one() -> None:
        async with rendering_session(report=report):
            pass

    await one()
    assert (report.slot_limit, report.slot_wait_seconds) == (None, None)
    assert len(emulator.ledger()["sessions"]) == 1


class _Asked(list[str]):
    """The names asked for, and the most slot requests in flight at once."""

    in_flight = 0
    peak = 0


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch, limit_name: str) -> _Asked:
    """The names every slot request to the Prefect server asked for."""
    from prefect.client.orchestration import PrefectClient

    names = _Asked()
    ask = PrefectClient.increment_concurrency_slots_with_lease

    async def counted(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
        mine = [n for n in kwargs["names"] if n == limit_name]
        names.extend(mine)
        names.in_flight += len(mine)
        names.peak = max(names.peak, names.in_flight)
        try:
            await asyncio.sleep(0.05)  # a server that takes its time: asks can overlap
            return await ask(self, *args, **kwargs)
        finally:
            names.in_flight -= len(mine)

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", counted)
    return names


async def test_no_limit_is_asked_once_per_run(
    limit_name: str, emulator: Emulator, asked: _Asked, caplog: pytest.LogCaptureFixture
) -> None:
    """Sessions starting together in a run without the limit ask the server once between
    them, later sessions of the run not at all, and the run logs it once."""

    @flow
    async def several() -> None:
        async def one() -> None:
            async with rendering_session(lease=timedelta(minutes=10)):
                pass

        await asyncio.gather(*(one() for _ in range(6)))
        await one()

    await several()
    assert asked == [limit_name]
    said = [r for r in caplog.records if "No Prefect global concurrency limit named" in r.message]
    assert len(said) == 1
    assert len(emulator.ledger()["sessions"]) == 7


@pytest.fixture
def moments(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock of the process's no-limit memory, moved by the test (``moments[0]``)."""
    now = [1000.0]
    monkeypatch.setattr(quota, "_now", lambda: now[0])
    return now


async def test_no_limit_is_remembered_by_the_process_for_a_while(
    limit_name: str,
    emulator: Emulator,
    asked: _Asked,
    moments: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run starting soon after another run of the process found no limit asks nothing
    (and still says why it holds no slot); once the memory has lapsed, a limit created
    meanwhile binds the next run."""
    report = SessionReport()

    @flow
    async def one_session() -> int | None:
        async with rendering_session(lease=timedelta(minutes=10), report=report):
            return await slots_in_use(limit_name) if report.slot_limit else None

    assert await one_session() is None
    assert asked == [limit_name]
    await create_limit(limit_name, 2)
    moments[0] += quota.NO_LIMIT_REMEMBERED_SECONDS - 1
    caplog.clear()
    assert await one_session() is None
    assert asked == [limit_name]  # the process remembered: no request
    assert (report.slot_limit, report.slot_wait_seconds) == (None, None)
    said = [r.message for r in caplog.records if "No Prefect global concurrency limit" in r.message]
    assert len(said) == 1
    assert "as this process learnt 29 s ago" in said[0]

    moments[0] += 2
    assert await one_session() == 1
    assert report.slot_limit == limit_name
    assert asked == [limit_name, limit_name]
    assert await slots_in_use(limit_name) == 0


async def test_a_lapsed_no_limit_memory_is_checked_with_a_read(
    limit_name: str,
    emulator: Emulator,
    asked: _Asked,
    moments: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once the process's memory of a missing limit has lapsed, the next run reads the
    limit instead of asking for a slot: still missing, it takes none and says so."""
    report = SessionReport()

    @flow
    async def one_session() -> None:
        async with rendering_session(lease=timedelta(minutes=10), report=report):
            pass

    await one_session()
    assert asked == [limit_name]
    moments[0] += quota.NO_LIMIT_REMEMBERED_SECONDS + 1
    caplog.clear()
    await one_session()
    assert asked == [limit_name]  # a read, not a slot request
    assert report.slot_limit is None
    said = [r.message for r in caplog.records if "No Prefect global concurrency limit" in r.message]
    assert len(said) == 1
    assert "as this process learnt" not in said[0]


async def slots_seen_together(limit_name: str, count: int) -> list[int]:
    """Start ``count`` sessions together in one flow run; each reports the slots in use
    once all of them are in their bodies, and none leaves its body (giving its slot back)
    before all have looked."""
    in_use: list[int] = []

    @flow
    async def together() -> None:
        ready = asyncio.Barrier(count)
        looked = asyncio.Barrier(count)

        async def one() -> None:
            async with rendering_session(lease=timedelta(minutes=10)):
                await ready.wait()
                in_use.append(await slots_in_use(limit_name))
                await looked.wait()

        await asyncio.gather(*(one() for _ in range(count)))

    await together()
    return in_use


@pytest.mark.realtime_job  # the bodies wait on the Prefect API: the session clock stands still
async def test_sessions_starting_together_each_take_a_slot(
    limit_name: str, emulator: Emulator, asked: _Asked
) -> None:
    """With the limit there, sessions starting together each take (and give back) a slot
    of their own: waiting on the first one's question does not share its slot."""
    await create_limit(limit_name, 5)
    assert await slots_seen_together(limit_name, 4) == [4, 4, 4, 4]
    assert len(asked) == 4
    # The first answer says the limit exists: the other three then ask side by side.
    assert asked.peak == 3
    assert await slots_in_use(limit_name) == 0


@pytest.mark.realtime_job  # the bodies wait on the Prefect API: the session clock stands still
async def test_slot_requests_in_flight_are_bounded(
    limit_name: str, emulator: Emulator, asked: _Asked
) -> None:
    """Many sessions starting together send at most SLOT_CALLS_AT_ONCE slot requests to
    the Prefect server at a time (200 at once drowned a SQLite server in 503s), and every
    one still gets its slot."""
    await create_limit(limit_name, 12)
    assert await slots_seen_together(limit_name, 12) == [12] * 12
    assert len(asked) == 12
    assert asked.peak == SLOT_CALLS_AT_ONCE == 4
    assert await slots_in_use(limit_name) == 0


async def test_outside_a_flow_run_there_is_no_quota(limit_name: str, emulator: Emulator) -> None:
    """No flow run, no Prefect server to count on: the limit is not consulted."""
    await create_limit(limit_name, 1)
    report = SessionReport()
    async with rendering_session(report=report):
        assert await slots_in_use(limit_name) == 0
    assert report.slot_limit is None


@pytest.mark.parametrize(
    "body_fails", [pytest.param(False, id="body-ends"), pytest.param(True, id="body-fails")]
)
async def test_the_slot_is_still_held_inside_the_stop(
    limit_name: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, body_fails: bool
) -> None:
    """The slot is given back only after the stop: while the stop request is being made,
    the Prefect limit still counts it (else another run could create a session the
    account's quota has no room for yet)."""
    await create_limit(limit_name, 1)
    during_stop: list[int] = []
    stop = ArrClient.stop_session

    async def looking(self: ArrClient, session_id: str) -> bool:
        during_stop.append(await slots_in_use(limit_name))
        return await stop(self, session_id)

    monkeypatch.setattr(ArrClient, "stop_session", looking)

    @flow
    async def one() -> None:
        async with rendering_session(lease=timedelta(minutes=10)):
            if body_fails:
                raise RuntimeError("the renderer crashed")

    if body_fails:
        with pytest.raises(RuntimeError, match="renderer crashed"):
            await one()
    else:
        await one()
    assert during_stop == [1]
    assert await slots_in_use(limit_name) == 0
    assert emulator.running() == []


@pytest.mark.parametrize("api_version", ["v1", "2021-01-01"])
async def test_the_slot_is_given_back_when_the_create_fails(
    limit_name: str, emulator: Emulator, api_version: str
) -> None:
    """A create that fails (5xx after the client's retries) gives the slot back."""
    await create_limit(limit_name, 1)
    route = "v1.create" if api_version == "v1" else "v2021.create"
    emulator.faults.add(kind="server_error", route=route, times=50)

    @flow
    async def one() -> None:
        async with rendering_session():
            pass

    with pytest.raises(ArrError):
        await one()
    assert await slots_in_use(limit_name) == 0


async def test_the_slot_is_given_back_when_the_body_fails(
    limit_name: str, emulator: Emulator
) -> None:
    """A failing body: the session is stopped, then the slot is given back."""
    await create_limit(limit_name, 1)

    @flow
    async def one() -> None:
        async with rendering_session():
            raise RuntimeError("the renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        await one()
    assert await slots_in_use(limit_name) == 0
    assert emulator.running() == []


async def test_a_full_limit_makes_the_run_wait_visibly(
    limit_name: str, emulator: Emulator, held_slot: dict[str, Any]
) -> None:
    """Every slot taken: no session is created until one frees; the wait is in the summary
    and in the run's session-slot-wait artifact."""
    run = asyncio.ensure_future(
        render_batch(job_parameters={"frames": 2, "seconds_per_frame": 30}, return_state=True)
    )
    await until_waiting(limit_name)
    await asyncio.sleep(0.5)
    assert emulator.ledger()["sessions"] == [], "a session was created without a slot"
    assert not run.done()
    await held_slot["release"]()
    state = await asyncio.wait_for(run, 60)
    summary = await state.aresult()
    assert isinstance(summary, RenderSummary)
    assert summary.session_slot_wait_seconds is not None
    assert summary.session_slot_wait_seconds >= 1
    assert "| Waited for a session slot |" in summary.markdown()
    assert await slots_in_use(limit_name) == 0
    async with get_client() as prefect:
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SLOT_WAIT_ARTIFACT_KEY]))
        )
    texts = [a.data for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
    assert any(f"for a slot of Prefect concurrency limit '{limit_name}'" in str(t) for t in texts)
    assert any(str(t).startswith("## Session slot\n\nWaited ") for t in texts)


@pytest.mark.parametrize("api_version", ["2021-01-01"])
async def test_owner_tags_are_written_while_the_slot_is_sought(
    limit_name: str,
    emulator: Emulator,
    held_slot: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    api_version: str,
) -> None:
    """A session the client names has its owner tag on the run while it still waits for a
    slot (one write for sessions starting together, off the way to the create); it is
    announced as created only once it has its slot, and created then."""
    announced: list[str] = []
    monkeypatch.setattr(
        events_module, "emit_event", lambda event, **_kwargs: announced.append(event)
    )
    report = SessionReport()
    run_ids: list[UUID] = []

    @flow
    async def one() -> None:
        from prefect.runtime import flow_run

        run_ids.append(UUID(flow_run.id))
        async with rendering_session(lease=timedelta(minutes=10), report=report):
            pass

    run = asyncio.ensure_future(one())
    await until_waiting(limit_name)
    async with get_client() as prefect:
        tags = (await prefect.read_flow_run(run_ids[0])).tags
    [tag] = [t for t in tags if t.startswith(OWNER_TAG_PREFIX)]
    assert tag.startswith(f"{OWNER_TAG_PREFIX}pf-{run_ids[0]}")
    assert "arr.session.created" not in announced
    assert emulator.ledger()["sessions"] == []
    await held_slot["release"]()
    await asyncio.wait_for(run, 60)
    assert tag == f"{OWNER_TAG_PREFIX}{report.session_id}"
    assert announced.count("arr.session.created") == 1
    assert [s["id"] for s in emulator.ledger()["sessions"]] == [report.session_id]


async def wait_artifacts(limit_name: str) -> list[str]:
    """The texts of every session-slot-wait artifact about ``limit_name``."""
    async with get_client() as prefect:
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SLOT_WAIT_ARTIFACT_KEY]))
        )
    return [str(a.data) for a in artifacts if f"'{limit_name}'" in str(a.data)]


async def until_waiting(limit_name: str) -> None:
    """Until a run says (in its artifact) that it waits for a slot of ``limit_name``."""
    deadline = time.monotonic() + 60
    while not await wait_artifacts(limit_name):
        assert time.monotonic() < deadline, "no run started waiting for a slot"
        await asyncio.sleep(0.2)


def scaled_client(emulator: Emulator, settings: ArrSettings) -> ArrClient:
    """A client whose clock runs an hour per real second, like the emulator's."""
    return ArrClient(
        settings, transport=emulator.transport(), clock=emulator.clock, token_cache=TokenCache()
    )


@pytest.fixture
def fast_emulator() -> Emulator:
    """Emulated time at an hour per real second: a slot wait of a second outlasts any
    ready timeout in minutes."""
    return Emulator(clock=ScaledClock(3600), startup_seconds=0)


async def test_waiting_does_not_count_against_the_ready_timeout(
    limit_name: str, settings: ArrSettings, held_slot: dict[str, Any], fast_emulator: Emulator
) -> None:
    """By default a wait longer than the ready timeout still ends in a Ready session."""

    @flow
    async def one() -> str:
        async with rendering_session(
            lease=timedelta(hours=2),
            ready_timeout=600,
            client=scaled_client(fast_emulator, settings),
        ) as session:
            return session.status.value

    run = asyncio.ensure_future(one())
    await until_waiting(limit_name)
    await asyncio.sleep(1.5)  # 1.5 emulated hours: far past the 10 min ready timeout
    await held_slot["release"]()
    assert await asyncio.wait_for(run, 60) == "Ready"
    assert fast_emulator.running() == []


@pytest.mark.parametrize("api_version", ["v1", "2021-01-01"])
async def test_waiting_counts_against_the_ready_timeout_when_asked(
    limit_name: str, settings: ArrSettings, held_slot: dict[str, Any], fast_emulator: Emulator
) -> None:
    """With ready_timeout_includes_slot_wait the wait is bounded by the ready timeout, and no
    session is ever created (nor reported: an ID chosen and tagged ahead is not one)."""
    report = SessionReport()

    @flow
    async def one() -> None:
        async with rendering_session(
            ready_timeout=600,
            client=scaled_client(fast_emulator, settings),
            ready_timeout_includes_slot_wait=True,
            report=report,
        ):
            pass

    started = time.monotonic()
    with pytest.raises(SlotWaitTimeoutError, match="counts against the ready timeout of 600 s"):
        await asyncio.wait_for(one(), 60)
    assert time.monotonic() - started < 10
    assert fast_emulator.ledger()["sessions"] == []
    assert report.session_id is None


async def test_the_lease_is_renewed_while_held(limit_name: str) -> None:
    """The keeper renews the slot's lease (every quarter of it; here every 0.2 s), and the
    Prefect server accepts each renewal of that lease (its answers, not our counter)."""
    await create_limit(limit_name, 1)
    slot = SessionSlot(limit_name, lease_seconds=60, renew_every=0.2)
    await slot.acquire()
    answered: list[tuple[str, int]] = []

    async def seen(response: httpx.Response) -> None:
        answered.append((response.request.url.path, response.status_code))

    try:
        assert slot.enforced
        assert slot.lease_id is not None
        assert slot._client is not None
        # The server has no endpoint to read a lease back: its answers to this client's
        # requests are what it did (204: found and extended; 410: unknown or expired).
        slot._client._client.event_hooks["response"].append(seen)
        assert await slots_in_use(limit_name) == 1
        await asyncio.sleep(1.5)
        renewed = [
            code for path, code in answered if path.endswith(f"/leases/{slot.lease_id}/renew")
        ]
        assert len(renewed) >= 3, answered
        assert set(renewed) == {204}, answered
        assert slot.renewals >= len(renewed) - 1  # one may be answered while we look
    finally:
        await slot.release()
    assert await slots_in_use(limit_name) == 0


async def test_a_give_back_that_times_out_says_so(
    limit_name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A give-back the server never answers ends at the deadline with a warning that says
    why (a timeout has no message of its own: the line read "(); the server frees it")."""
    from prefect.client.orchestration import PrefectClient

    from arr_prefect.flows import quota

    await create_limit(limit_name, 1)
    slot = SessionSlot(limit_name, lease_seconds=60)
    await slot.acquire()

    async def never(self: PrefectClient, **_kwargs: Any) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(PrefectClient, "release_concurrency_slots_with_lease", never)
    monkeypatch.setattr(quota, "_RELEASE_TIMEOUT_SECONDS", 0.0)  # fail_after's 1 s floor
    await slot.release()
    [line] = [r.getMessage() for r in caplog.records if "Could not give back" in r.getMessage()]
    assert "(no answer within 0 s)" in line
    assert "within 1 min 15 s" in line


def test_names_and_bounds() -> None:
    """The default name carries the account; a killed holder's slot returns within 75 s."""
    assert session_limit_name("arr-sessions-{account_id}", "1111") == "arr-sessions-1111"
    assert slot_return_bound(60) == 75
    with pytest.raises(ValueError, match="60 to 86400 seconds"):
        SessionSlot("x", lease_seconds=30)
