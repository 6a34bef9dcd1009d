"""The Prefect tasks: thin wrappers over the client, tested through .fn and in flows."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from prefect import Task, flow
from prefect.cache_policies import NO_CACHE
from prefect.states import exception_to_failed_state

from arr_prefect import tasks
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.errors import (
    ArrError,
    ArrHTTPError,
    ArrTransportError,
    AuthenticationError,
    BadRequestError,
    RateLimitedError,
    ReadyTimeoutError,
    ServiceError,
    SessionFailedError,
    SessionNotFoundError,
    SessionStoppedError,
)
from arr_prefect.models import SessionStatus

pytestmark = pytest.mark.usefixtures("arr")

ALL_TASKS: list[Task[..., Any]] = [
    tasks.get_access_token,
    tasks.create_session,
    tasks.wait_until_ready,
    tasks.extend_session,
    tasks.stop_session,
    tasks.get_session,
    tasks.list_sessions,
]


@pytest.mark.parametrize("task", [pytest.param(t, id=t.name) for t in ALL_TASKS])
def test_task_options(task: Task[..., Any]) -> None:
    """Every task is async, never cached, never persisted, and documented with an example."""
    assert task.cache_policy is NO_CACHE
    assert task.persist_result is False
    assert task.isasync
    assert "Example::" in (task.fn.__doc__ or "")


def test_only_idempotent_tasks_retry() -> None:
    """Create, token and wait are never retried by Prefect; the idempotent calls may be."""
    assert tasks.create_session.retries == 0
    assert tasks.get_access_token.retries == 0
    assert tasks.wait_until_ready.retries == 0
    for task in (tasks.stop_session, tasks.get_session, tasks.list_sessions, tasks.extend_session):
        assert task.retries > 0


async def test_lifecycle_through_task_functions(emulator: Emulator, api_version: str) -> None:
    """token → create → wait → get → list → extend → stop, each through .fn."""
    token = await tasks.get_access_token.fn()
    assert token.token.get_secret_value() not in repr(token)
    session = await tasks.create_session.fn(lease="0:30:00", size="premium")
    assert session.status == SessionStatus.STARTING
    ready = await tasks.wait_until_ready.fn(session.id)
    assert ready.status == SessionStatus.READY
    assert ready.hostname
    assert (await tasks.get_session.fn(session.id)).status == SessionStatus.READY
    assert [s.id for s in await tasks.list_sessions.fn()] == [session.id]
    longer = await tasks.extend_session.fn(session.id, lease=timedelta(hours=1))
    assert longer.max_lease is not None
    assert longer.max_lease >= timedelta(hours=1)
    by = await tasks.extend_session.fn(session.id, extend_by=timedelta(hours=2))
    assert by.max_lease is not None
    assert by.max_lease >= timedelta(hours=2)
    assert await tasks.stop_session.fn(session.id) is True
    await tasks.stop_session.fn(session.id)  # idempotent: no error the second time
    assert await tasks.stop_session.fn("never-existed") is False
    assert emulator.running() == []


async def test_extend_needs_exactly_one_of_lease_and_extend_by(emulator: Emulator) -> None:
    """extend_session refuses both or neither of lease and extend_by, before any request."""
    with pytest.raises(ValueError, match="exactly one"):
        await tasks.extend_session.fn("some-session")
    with pytest.raises(ValueError, match="exactly one"):
        await tasks.extend_session.fn("some-session", lease=10, extend_by=10)
    assert emulator.request_counts() == {}


async def test_wait_logs_status_changes_only(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """wait_until_ready logs each status change once, not every poll."""
    session = await tasks.create_session.fn(lease=30)
    with caplog.at_level(logging.INFO, logger="arr.tasks"):
        await tasks.wait_until_ready.fn(session.id, poll_interval=5)
    messages = [r.getMessage() for r in caplog.records if r.name == "arr.tasks"]
    assert sum("is Starting" in m for m in messages) == 1
    assert sum("Starting -> Ready" in m for m in messages) == 1
    assert emulator.request_count("v1.get") + emulator.request_count("v2021.get") >= 12
    await tasks.stop_session.fn(session.id)


async def test_create_logs_the_lease_asked_for(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A 10-minute lease is logged as ``10 min``: the v1 create's sub-second fingerprint
    made the log say ``10 min 1 s``."""
    with caplog.at_level(logging.INFO, logger="arr.tasks"):
        session = await tasks.create_session.fn(lease=timedelta(minutes=10))
    await tasks.stop_session.fn(session.id)
    created = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Created")]
    assert created == [f"Created session {session.id} (Standard, lease 10 min)"]


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        pytest.param("session_error", SessionFailedError, "failed to start", id="error"),
        pytest.param("stopped", SessionStoppedError, "was stopped", id="stopped"),
        pytest.param("slow", ReadyTimeoutError, "not Ready after 120s", id="timeout"),
    ],
)
async def test_wait_ends_with_specific_error(
    emulator: Emulator, api_version: str, setup: str, error: type[Exception], match: str
) -> None:
    """wait_until_ready ends with a specific error carrying the service's message."""
    if setup == "session_error":
        emulator.faults.add("session_error", "v1.create" if api_version == "v1" else "v2021.create")
    if setup == "slow":
        emulator.state.startup_seconds = 3600
    session = await tasks.create_session.fn(lease=30)
    if setup == "stopped":
        await tasks.stop_session.fn(session.id)
    with pytest.raises(error, match=match):
        await tasks.wait_until_ready.fn(session.id, timeout=120)
    await tasks.stop_session.fn(session.id)


async def test_prefect_retries_stop_on_transient_failures(
    emulator: Emulator, clock: VirtualClock
) -> None:
    """stop_session's Prefect retry kicks in only after the client's retries ran out."""
    session = await tasks.create_session.fn(lease=30)
    route = "v1.stop" if emulator.request_count("v1.create") else "v2021.stop"
    emulator.faults.add("server_error", route, times=6)  # one full client round of attempts

    @flow
    async def stop_it() -> bool:
        return await tasks.stop_session.with_options(retry_delay_seconds=0)(session.id)

    assert await stop_it() is True
    assert emulator.request_count(route) == 7
    assert emulator.running() == []


async def test_prefect_does_not_retry_permanent_failures(emulator: Emulator) -> None:
    """A 404 on get_session fails at once: retrying cannot help."""
    from arr_prefect.errors import SessionNotFoundError

    @flow
    async def get_missing() -> None:
        await tasks.get_session.with_options(retry_delay_seconds=0)("no-such-session")

    with pytest.raises(SessionNotFoundError):
        await get_missing()
    route = "v1.get" if emulator.request_count("v1.get") else "v2021.get"
    assert emulator.request_count(route) == 1


def _error(cls: type[ArrError], status: int | None = None) -> ArrError:
    url = "https://arr.test/s"
    if issubclass(cls, ArrHTTPError):
        return cls(operation="get session", method="GET", url=url, status_code=status or 500)
    assert cls is ArrTransportError
    return cls("get session failed: no answer", operation="get session", method="GET", url=url)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        pytest.param(_error(ServiceError, 503), True, id="5xx"),
        pytest.param(_error(RateLimitedError, 429), True, id="429"),
        pytest.param(_error(ArrTransportError), True, id="no-answer"),
        pytest.param(_error(SessionNotFoundError, 404), False, id="404"),
        pytest.param(_error(BadRequestError, 400), False, id="400"),
        pytest.param(_error(AuthenticationError, 401), False, id="401"),
        pytest.param(ValueError("a bug"), False, id="not-an-arr-error"),
    ],
)
async def test_retry_condition_retries_only_transient_failures(
    error: Exception, retry: bool
) -> None:
    """Prefect retries a failed task run for 5xx, 429 and no answer; never for the rest."""
    state = await exception_to_failed_state(error)
    assert await tasks.sessions._transient(tasks.get_session, None, state) is retry  # type: ignore[arg-type]
