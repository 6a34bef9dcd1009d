"""Plain ``def`` pipelines: every task, ``rendering_session`` and ``run_render_batch`` from
sync code, driving the one async implementation on the package's event-loop thread.

The emulator runs in-process on the virtual clock (autojump): a body that blocks its own
thread leaves the package's loop idle, so virtual time runs on there and hours of lease
pass in milliseconds while the body waits for the clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect import flow, get_client, task
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events import Event
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from arr_prefect import _loop
from arr_prefect import tasks as _tasks
from arr_prefect.auth import AccessToken
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.errors import SessionStoppedError
from arr_prefect.flows import (
    OWNER_TAG_PREFIX,
    SessionReport,
    arendering_session,
    arun_render_batch,
    deployment_runs,
    rendering_session,
    run_render_batch,
)
from arr_prefect.flows import events as events_module
from arr_prefect.flows.sync_session import RenderingSession, _SessionLost
from arr_prefect.models import Session
from arr_prefect.settings import ArrSettings
from arr_prefect.tasks._dual import AsyncTask, DualTask
from tests.flows.conftest import make_settings

pytestmark = pytest.mark.usefixtures("arr")

# Type checkers see each task's async signature (so async callers keep exact types); the
# values sync callers get are untyped here.
tasks: Any = _tasks

LEASE = timedelta(minutes=4)
BODY_TIMEOUT = 4
"""Real seconds a timeout test's flow or task may take: enough to reach the body (a
session is Ready in well under a second) on a loaded machine."""
REAL_TIME = pytest.mark.realtime_job
"""For bodies that need no session time to pass: the clock stands still (sessions are
Ready at once), so real time spent by threads cannot let virtual time race past a lease
while several keepers share the loop."""
BOTH_VERSIONS = pytest.mark.parametrize("api_version", ["v1", "2021-01-01"], indirect=True)


@pytest.fixture
def api_version(request: pytest.FixtureRequest) -> str:
    """v1, or both versions for tests marked BOTH_VERSIONS (the sync door does not depend
    on the version; the lifecycle tests check both anyway)."""
    return str(getattr(request, "param", "v1"))


def statuses(emulator: Emulator) -> list[tuple[str, str | None]]:
    return [(e["status"], e["end_reason"]) for e in emulator.ledger()["sessions"]]


def thread_pool(workers: int) -> Any:
    """Prefect's thread-pool task runner (typed Any: its generics reject some flows)."""
    return ThreadPoolTaskRunner(max_workers=workers)


def block_until(clock: VirtualClock, seconds: float) -> None:
    """Block this thread (no event loop here) until ``seconds`` of session time passed."""
    deadline = clock.time() + seconds
    real_deadline = time.monotonic() + 30
    while clock.time() < deadline:
        if time.monotonic() > real_deadline:
            pytest.fail("session time stood still: nothing on the package's loop waits on it")
        time.sleep(0.001)


# -- tasks ---------------------------------------------------------------------------


@BOTH_VERSIONS
def test_every_task_returns_its_value_in_a_def_flow(emulator: Emulator) -> None:
    """In a def flow each task returns its value (not a coroutine), as a run of that flow."""

    @flow
    def pipeline() -> dict[str, Any]:
        token = tasks.get_access_token()
        created = tasks.create_session(lease=LEASE)
        ready = tasks.wait_until_ready(created.id)
        extended = tasks.extend_session(created.id, extend_by=timedelta(minutes=8))
        seen = tasks.get_session(created.id)
        listed = tasks.list_sessions()
        stopped = tasks.stop_session(created.id)
        return {
            "token": token,
            "created": created,
            "ready": ready,
            "extended": extended,
            "seen": seen,
            "listed": listed,
            "stopped": stopped,
            "run": str(flow_run.id),
        }

    out = pipeline()
    assert isinstance(out["token"], AccessToken)
    assert isinstance(out["created"], Session)
    assert out["ready"].status == "Ready"
    assert out["extended"].max_lease is not None
    assert out["extended"].max_lease >= timedelta(minutes=8)
    assert out["seen"].id == out["created"].id
    assert [s.id for s in out["listed"]] == [out["created"].id]
    assert out["stopped"] is True
    assert statuses(emulator) == [("Stopped", "stopped")]
    # The task runs belong to the def flow's run (the server records task runs from their
    # events, a moment after the flow returned).
    expected = ("get-access-token", "create-session", "wait-until-ready", "extend-session",
                "get-session", "list-sessions", "stop-session")  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as prefect:
            runs = prefect.read_task_runs()
        names = {r.name for r in runs if str(r.flow_run_id) == out["run"]}
        missing = [e for e in expected if not [n for n in names if n.startswith(e)]]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert missing == [], names


async def test_the_async_forms_still_work_in_an_async_flow(emulator: Emulator) -> None:
    """In an async flow the plain names are awaited as before, and the a-forms too."""

    @flow
    async def pipeline() -> bool:
        created = await tasks.create_session(lease=LEASE)
        await tasks.await_until_ready(created.id)
        assert (await tasks.aget_session(created.id)).status == "Ready"
        await tasks.aextend_session(created.id, extend_by=timedelta(minutes=8))
        assert len(await tasks.alist_sessions()) == 1
        assert (await tasks.aget_access_token()).account_id
        session = await tasks.wait_until_ready(created.id)
        return bool(await tasks.astop_session(session.id))

    assert await pipeline() is True
    assert statuses(emulator) == [("Stopped", "stopped")]


def test_tasks_outside_any_flow_run_return_values(emulator: Emulator) -> None:
    """A script (no flow run, no event loop) gets values too."""
    session = tasks.wait_until_ready(tasks.create_session(lease=LEASE).id)
    assert session.status == "Ready"
    assert tasks.stop_session(session.id) is True
    assert statuses(emulator) == [("Stopped", "stopped")]


@REAL_TIME
def test_a_def_task_calls_the_tasks_in_its_own_thread(emulator: Emulator) -> None:
    """Sync tasks run by a thread pool call the tasks too (a task run nested in a task run)."""

    @task
    def lifecycle(index: int) -> str:
        session: Session = tasks.wait_until_ready(tasks.create_session(lease=LEASE).id)
        tasks.stop_session(session.id)
        return session.id

    @flow(task_runner=thread_pool(3))
    def pipeline() -> list[str]:
        return list(lifecycle.map([0, 1, 2]).result())

    ids = pipeline()
    assert len(set(ids)) == 3
    assert statuses(emulator) == [("Stopped", "stopped")] * 3


def test_with_options_keeps_each_form() -> None:
    """with_options returns the same form (dual stays dual, async-only stays async-only)."""
    assert isinstance(tasks.stop_session.with_options(retries=0), DualTask)
    explicit = tasks.astop_session.with_options(retries=0)
    assert isinstance(explicit, AsyncTask)
    with pytest.raises(TypeError, match="call stop_session"):
        _ = explicit("some-session")


ASYNC_FORMS: list[Any] = [
    pytest.param(lambda: tasks.aget_access_token(), "get_access_token", id="aget_access_token"),
    pytest.param(lambda: tasks.acreate_session(lease=LEASE), "create_session", id="acreate"),
    pytest.param(lambda: tasks.await_until_ready("x"), "wait_until_ready", id="await_until_ready"),
    pytest.param(
        lambda: tasks.aextend_session("x", extend_by=LEASE), "extend_session", id="aextend"
    ),
    pytest.param(lambda: tasks.astop_session("x"), "stop_session", id="astop"),
    pytest.param(lambda: tasks.aget_session("x"), "get_session", id="aget_session"),
    pytest.param(lambda: tasks.alist_sessions(), "list_sessions", id="alist_sessions"),
]


@pytest.mark.parametrize(("call", "sync_name"), ASYNC_FORMS)
def test_an_async_form_in_a_def_flow_says_which_form_to_use(
    emulator: Emulator, call: Callable[[], Any], sync_name: str
) -> None:
    """acreate_session(...) in a def flow raises a TypeError naming create_session; nothing
    is created and no coroutine is left un-awaited."""

    @flow
    def pipeline() -> None:
        call()

    expected = rf"the async form of {sync_name}.*call {sync_name}"
    with _no_unawaited_coroutine(), pytest.raises(TypeError, match=expected):
        pipeline()
    assert emulator.ledger()["sessions"] == []
    assert emulator.request_counts() == {}


class _no_unawaited_coroutine:
    """Fails if a 'coroutine ... was never awaited' warning is raised inside."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: Any) -> None:
        import gc

        gc.collect()
        self._catch.__exit__(*exc)
        never = [w for w in self._seen if "never awaited" in str(w.message)]
        assert never == [], [str(w.message) for w in never]


def test_an_async_form_outside_any_flow_says_which_form_to_use(emulator: Emulator) -> None:
    """In plain sync code (a script) the a-forms refuse too, before anything is sent."""
    with pytest.raises(TypeError, match="call create_session"):
        tasks.acreate_session(lease=LEASE)
    assert emulator.ledger()["sessions"] == []


# -- with rendering_session ------------------------------------------------------------


@BOTH_VERSIONS
@REAL_TIME
def test_with_in_a_def_flow_stops_the_session_when_the_body_raises(emulator: Emulator) -> None:
    """The body's exception comes out of with unchanged, after the session was stopped."""
    stopped_first: list[list[tuple[str, str | None]]] = []

    @flow
    def pipeline() -> None:
        try:
            with rendering_session(lease=LEASE) as session:
                assert session.status == "Ready"
                raise ValueError("renderer crashed")
        finally:
            stopped_first.append(statuses(emulator))

    state = pipeline(return_state=True)
    assert state.type == StateType.FAILED
    with pytest.raises(ValueError, match="renderer crashed") as info:
        state.result()
    assert stopped_first == [[("Stopped", "stopped")]]
    # The traceback is the body's own, not the loop thread's.
    assert "sync_session.py" not in "".join(str(t.path) for t in info.traceback)


@REAL_TIME
def test_with_in_a_def_flow_stops_the_session_on_a_flow_timeout(emulator: Emulator) -> None:
    """A def flow timing out while the body blocks: the session is stopped, the run TimedOut."""
    report = SessionReport()

    entered: list[bool] = []

    @flow(timeout_seconds=BODY_TIMEOUT)
    def pipeline() -> None:
        with rendering_session(lease=LEASE, report=report):
            entered.append(True)
            while True:
                time.sleep(0.01)

    state = pipeline(return_state=True)
    assert state.name == "TimedOut"
    assert entered == [True], "timed out before the body: raise BODY_TIMEOUT"
    assert report.stopped_by == "finally"
    assert statuses(emulator) == [("Stopped", "stopped")]


@REAL_TIME
def test_with_in_a_def_task_stops_the_session_on_the_tasks_timeout(emulator: Emulator) -> None:
    """A def task timing out in a pool thread (Prefect raises into that thread): stopped."""

    entered: list[bool] = []

    @task(timeout_seconds=BODY_TIMEOUT)
    def render() -> None:
        with rendering_session(lease=LEASE):
            entered.append(True)
            while True:
                time.sleep(0.01)

    @flow(task_runner=thread_pool(1))
    def pipeline() -> str | None:
        future = render.submit()
        future.wait()
        return future.state.name

    assert pipeline() == "TimedOut"
    assert entered == [True], "timed out before the body: raise BODY_TIMEOUT"
    assert statuses(emulator) == [("Stopped", "stopped")]


def test_a_blocking_body_longer_than_the_lease_keeps_its_session(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """A sync body blocking for twice the lease finds its session still Ready: the lease
    keeper runs on the package's loop while the body's thread is blocked."""
    report = SessionReport()

    @flow
    def pipeline() -> str:
        with rendering_session(lease=LEASE, report=report) as session:
            block_until(clock, 2 * LEASE.total_seconds())
            return str(tasks.get_session(session.id).status)

    assert pipeline() == "Ready"
    assert report.lease_renewals >= 3
    assert statuses(emulator) == [("Stopped", "stopped")]


@BOTH_VERSIONS
def test_a_session_lost_while_the_body_runs_raises_the_specific_error(
    emulator: Emulator,
) -> None:
    """Stopped elsewhere while a sync body runs Python code: the body is interrupted and
    with raises SessionStoppedError (never the private interrupt)."""
    went_on: list[bool] = []

    @flow
    def pipeline() -> None:
        with rendering_session(lease=LEASE) as session:
            tasks.stop_session(session.id)  # someone else stops it
            for _ in range(500):  # Python code: interrupted at its next bytecode
                time.sleep(0.01)
            went_on.append(True)

    state = pipeline(return_state=True)
    with pytest.raises(SessionStoppedError) as info:
        state.result()
    assert not isinstance(info.value, _SessionLost)
    assert info.value.__suppress_context__
    assert went_on == []
    assert statuses(emulator) == [("Stopped", "stopped")]


def test_an_interrupt_that_lands_as_the_with_block_ends_is_the_specific_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body finished just as its session was lost: the interrupt, sent during the
    body's last instructions, is raised when __exit__ calls _close_body. with still
    raises SessionStoppedError, after teardown, never the private interrupt."""
    import arr_prefect.flows.sync_session as sync_session

    sent: list[type[BaseException] | None] = []
    monkeypatch.setattr(sync_session, "_send", lambda _thread, exc_type: sent.append(exc_type))
    close_body = RenderingSession._close_body

    def interrupt_lands_first(self: RenderingSession) -> bool:
        if sent and sent[0] is _SessionLost and sent.count(_SessionLost) == 1:
            sent.append(_SessionLost)  # delivered once
            raise _SessionLost
        return close_body(self)

    monkeypatch.setattr(RenderingSession, "_close_body", interrupt_lands_first)

    @flow
    def pipeline() -> None:
        with rendering_session(lease=LEASE) as session:
            tasks.stop_session(session.id)  # someone else stops it
            deadline = time.monotonic() + 10
            while not sent and time.monotonic() < deadline:  # the interrupt is sent...
                time.sleep(0.01)
            assert sent == [_SessionLost]  # ...and not raised in the body

    state = pipeline(return_state=True)
    with pytest.raises(SessionStoppedError) as info:
        state.result()
    assert not isinstance(info.value, _SessionLost)
    assert statuses(emulator) == [("Stopped", "stopped")]


def test_a_body_inside_one_long_call_sees_the_loss_when_it_returns(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """A body in one long C call (time.sleep) is interrupted as soon as the call returns:
    the next line of the body never runs; the session was stopped meanwhile."""
    after_sleep: list[bool] = []
    stopped_during_sleep: list[list[tuple[str, str | None]]] = []

    def stop_elsewhere(session_id: str) -> None:
        emulator_stop = threading.Thread(target=tasks.stop_session, args=(session_id,))
        emulator_stop.start()
        emulator_stop.join()

    def body() -> None:
        with rendering_session(lease=LEASE) as session:
            stop_elsewhere(session.id)
            time.sleep(0.5)  # the loss is found (virtual time) long before this returns
            stopped_during_sleep.append(statuses(emulator))
            after_sleep.append(True)

    with pytest.raises(SessionStoppedError):
        body()
    assert after_sleep == []
    assert stopped_during_sleep == []
    assert statuses(emulator) == [("Stopped", "stopped")]


@REAL_TIME
def test_three_mapped_def_tasks_each_hold_a_session(emulator: Emulator) -> None:
    """Three sync tasks in a thread pool, each with its own session, one failing: two
    results, one failure, all three sessions stopped."""

    @task
    def render_scene(scene: int) -> str:
        with rendering_session(lease=LEASE) as session:
            if scene == 1:
                raise RuntimeError(f"scene {scene} failed")
            return session.id

    @flow(task_runner=thread_pool(3))
    def pipeline() -> list[Any]:
        futures = render_scene.map([0, 1, 2])
        futures.wait()
        return [f.state for f in futures]

    states = pipeline()
    assert [s.type for s in states] == [StateType.COMPLETED, StateType.FAILED, StateType.COMPLETED]
    ids = [s.result() for s in states if s.type == StateType.COMPLETED]
    assert len(set(ids)) == 2
    assert statuses(emulator) == [("Stopped", "stopped")] * 3


@REAL_TIME
def test_with_outside_any_flow_run(emulator: Emulator) -> None:
    """A script uses with too: Ready inside, stopped after."""
    report = SessionReport()
    with rendering_session(lease=LEASE, report=report) as session:
        assert session.status == "Ready"
        assert statuses(emulator) == [("Ready", None)]
    assert report.stopped_by == "finally"
    assert statuses(emulator) == [("Stopped", "stopped")]


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Every event our code emits, as Prefect would build it."""
    seen: list[Event] = []

    def record(event: str, **kwargs: Any) -> None:
        seen.append(Event(event=event, **kwargs))

    monkeypatch.setattr(events_module, "emit_event", record)
    return seen


@pytest.fixture
def limit_name() -> str:
    return f"arr-sessions-sync-{uuid4().hex[:12]}"


@pytest.fixture
def settings(api_version: str, limit_name: str) -> ArrSettings:
    return make_settings(api_version, session_limit=limit_name)


@BOTH_VERSIONS
@REAL_TIME
def test_with_in_a_def_flow_records_like_async_with(
    emulator: Emulator, emitted: list[Event], limit_name: str
) -> None:
    """Quota slot held during the body and given back, the owner tag on the def flow's run,
    the lifecycle events related to it, and a filled SessionReport: as async with."""
    with get_client(sync_client=True) as prefect:
        prefect.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=limit_name, limit=2)
        )

    def slots_in_use() -> int:
        with get_client(sync_client=True) as prefect:
            return prefect.read_global_concurrency_limit_by_name(limit_name).active_slots

    report = SessionReport()

    @flow
    def pipeline() -> tuple[str, int]:
        with rendering_session(lease=LEASE, report=report) as session:
            return session.id, slots_in_use()

    state = pipeline(return_state=True)
    session_id, held = state.result()
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    assert held == 1
    assert slots_in_use() == 0
    assert report.slot_limit == limit_name
    assert (report.session_id, report.stopped_by, report.final_status) == (
        session_id,
        "finally",
        "Stopped",
    )
    assert report.time_to_ready is not None
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)
    assert f"{OWNER_TAG_PREFIX}{session_id}" in run.tags
    names = [e.event for e in emitted]
    assert names[:2] == ["arr.session.created", "arr.session.ready"]
    assert names[-1] == "arr.session.stopped"
    for event in emitted:
        assert event.resource.id == f"arr.session.{session_id}"
        assert f"prefect.flow-run.{run_id}" in {r.id for r in event.related}


async def test_with_in_async_code_says_to_use_async_with(emulator: Emulator) -> None:
    """with where it would block a running loop raises RuntimeError naming async with."""
    session = rendering_session(lease=LEASE)
    with pytest.raises(RuntimeError, match="use `async with rendering_session"):
        session.__enter__()
    assert emulator.ledger()["sessions"] == []


def test_with_on_the_package_loop_thread_says_to_use_async_with(emulator: Emulator) -> None:
    """Code running on the package's own loop cannot block it with a sync with either."""

    async def on_the_loop() -> None:
        with rendering_session(lease=LEASE):
            pytest.fail("the body must not run")

    with pytest.raises(RuntimeError, match="use `async with"):
        _loop.wait(_loop.run(on_the_loop()))
    assert emulator.ledger()["sessions"] == []


async def test_async_with_is_unchanged(emulator: Emulator) -> None:
    """rendering_session(...) is still an async context manager, and so is
    arendering_session(...)."""
    async with rendering_session(lease=LEASE) as first:
        assert first.status == "Ready"
    async with arendering_session(lease=LEASE) as second:
        assert second.status == "Ready"
    assert isinstance(rendering_session(), RenderingSession)
    assert statuses(emulator) == [("Stopped", "stopped")] * 2


# -- run_render_batch ------------------------------------------------------------------


def test_run_render_batch_from_a_def_flow_cancels_its_run_on_the_flows_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A def flow timing out while run_render_batch waits: the render-batch run is
    cancelled before the flow run ends (TimedOut)."""
    run_id = uuid4()
    cancelled: list[tuple[UUID, str]] = []

    async def started(*args: Any, **kwargs: Any) -> FlowRun:
        return FlowRun(id=run_id, name="child", flow_id=uuid4(), state=Completed())

    async def never_over(run: FlowRun, poll_interval: float) -> FlowRun:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cancel(cancel_id: UUID, reason: str) -> None:
        await asyncio.sleep(0.2)  # the cancel takes a moment: the caller must wait for it
        cancelled.append((cancel_id, reason))

    monkeypatch.setattr(deployment_runs, "arun_deployment", started)
    monkeypatch.setattr(deployment_runs, "_wait_until_final", never_over)
    monkeypatch.setattr(deployment_runs, "_cancel", cancel)

    @flow(timeout_seconds=1)
    def pipeline() -> None:
        run_render_batch({"size": "standard"})

    state = pipeline(return_state=True)
    assert state.name == "TimedOut"
    assert [c[0] for c in cancelled] == [run_id]


async def test_run_render_batch_in_async_code_is_awaitable() -> None:
    """From async code run_render_batch returns the awaitable of arun_render_batch."""
    call = run_render_batch({}, timeout=-1)
    assert asyncio.iscoroutine(call)
    with pytest.raises(Exception, match="timeout must be positive"):
        await call
    with pytest.raises(Exception, match="timeout must be positive"):
        await arun_render_batch({}, timeout=-1)


def test_run_render_batch_in_sync_code_refuses_bad_arguments() -> None:
    """From sync code the same checks raise at once, before any run is started."""
    with pytest.raises(Exception, match="poll_interval must be positive"):
        run_render_batch({}, poll_interval=0)
