"""The session guard: a process that registered a session and then died by SIGKILL has the
session stopped within seconds; a released session is left alone.

Real processes on loopback: the emulator serves HTTP from a thread of this process, a
child process owns the session and its guard, and the test kills the child.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from arr_prefect import guard as guard_module
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.flows import events as events_module
from arr_prefect.guard import SessionGuard
from arr_prefect.settings import load_settings

pytestmark = pytest.mark.loopback

T = TypeVar("T")

STOPPED_WITHIN = 15.0
"""Real seconds from the SIGKILL to the session's stop, on a loaded 2-core machine
(typically well under one: the guard is already running and reads end-of-file at once)."""

CHILD = """
import asyncio, os, sys
from datetime import timedelta
from arr_prefect.client import ArrClient
from arr_prefect.guard import session_guard
from arr_prefect.settings import load_settings

url, api_version, mode, account, key = sys.argv[1:6]

async def main() -> None:
    settings = load_settings(
        _env_file=None, account_id=account, account_key=key,
        service_url=url, sts_url=url, api_version=api_version,
    )
    async with ArrClient(settings) as arr:
        session = await arr.create_session(lease=timedelta(hours=1))
        guard = session_guard()
        guard.watch(session.id, settings, None)
        if mode == "release":
            guard.release(session.id)
        print(session.id, guard.process.pid, flush=True)
        if mode == "release":
            return
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while (result := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.02)
    return result


def pid_gone(pid: int) -> bool | None:
    """True once ``pid`` has exited (a zombie nobody reaped counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return True if state in ("Z", "X") else None


@pytest.fixture
def served() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(startup_seconds=0)
    with emulator.serve() as url:
        yield emulator, url


def start_child(url: str, api_version: str, mode: str) -> tuple[subprocess.Popen[str], str, int]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARR_")}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            url,
            api_version,
            mode,
            DEFAULT_ACCOUNT_ID,
            DEFAULT_ACCOUNT_KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    session_id, guard_pid = child.stdout.readline().split()
    return child, session_id, int(guard_pid)


@pytest.mark.parametrize("api_version", ["v1", "2021-01-01"])
def test_sigkill_of_the_owner_stops_its_session(
    served: tuple[Emulator, str], api_version: str
) -> None:
    """SIGKILL the process that owns a session: its guard stops the session in seconds."""
    emulator, url = served
    child, session_id, guard_pid = start_child(url, api_version, "keep")
    assert [s.id for s in emulator.running()] == [session_id]
    killed = time.monotonic()
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    eventually(lambda: emulator.running() == [] or None, STOPPED_WITHIN, "the session stopped")
    took = time.monotonic() - killed
    [entry] = emulator.ledger()["sessions"]
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped")
    assert took < STOPPED_WITHIN
    print(f"session stopped {took:.2f} s after the SIGKILL")
    eventually(lambda: pid_gone(guard_pid), 10, "the guard to exit")


def test_released_session_is_left_alone(served: tuple[Emulator, str]) -> None:
    """A session teardown released is not the guard's any more: the owner exits normally,
    the guard exits, the session keeps running."""
    emulator, url = served
    child, session_id, guard_pid = start_child(url, "v1", "release")
    assert child.wait(30) == 0
    eventually(lambda: pid_gone(guard_pid), 10, "the guard to exit")
    assert [s.id for s in emulator.running()] == [session_id]
    emulator.state.stop(DEFAULT_ACCOUNT_ID, session_id)


class _Pipe:
    """The stdin of a guard that is not started: collects what ``watch`` sends."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass


class _NotStarted:
    """Enough of a Popen for :class:`SessionGuard` to send registrations to."""

    def __init__(self) -> None:
        self.stdin = _Pipe()

    def poll(self) -> None:
        return None


@pytest.mark.parametrize("api_version", ["v1", "2021-01-01"])
def test_guard_stop_event_carries_the_session_payload(
    api_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard's ``arr.session.stopped`` carries what every session event carries (size,
    API version, elapsed and billed time, estimated cost, final status) and is related to
    the flow run, flow and deployment the flow-run process registered the session with."""
    # The service's clock: the session is created 170 s before the guard's (real) now.
    clock = VirtualClock(start=time.time() - 170)
    emulator = Emulator(clock=clock, startup_seconds=30)
    emitted: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        events_module, "emit_event", lambda event, **kwargs: emitted.append((event, kwargs))
    )
    with emulator.serve() as url:
        settings = load_settings(
            _env_file=None,
            account_id=DEFAULT_ACCOUNT_ID,
            account_key=DEFAULT_ACCOUNT_KEY,
            service_url=url,
            sts_url=url,
            api_version=api_version,
            price_standard_per_hour=3.0,
        )

        async def create() -> str:
            async with ArrClient(settings) as arr:
                return (await arr.create_session(lease=timedelta(hours=1))).id

        session_id = asyncio.run(create())
        clock.advance(30 + 150)  # Starting 30 s, then 150 s Ready
        # What the flow-run process sends the guard, through the real message format.
        process = _NotStarted()
        SessionGuard(process).watch(  # type: ignore[arg-type]
            session_id,
            settings,
            "0b9c9f5e-run",
            flow_run_name="clever-otter",
            flow_id="f10w",
            deployment_id="dep1oy",
        )
        message = json.loads(process.stdin.data)
        watched = {session_id: message}
        stopped = asyncio.run(guard_module._stop_all(watched))
        guard_module._announce(stopped, watched, "4242")
    assert emulator.running() == []
    [(event, sent)] = emitted
    assert event == "arr.session.stopped"
    assert sent["resource"]["prefect.resource.id"] == f"arr.session.{session_id}"
    assert sent["resource"]["arr.session.size"] == "standard"
    assert sent["resource"]["arr.api-version"] == api_version
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in sent["related"]}
    assert related == {
        "flow-run": "prefect.flow-run.0b9c9f5e-run",
        "flow": "prefect.flow.f10w",
        "deployment": "prefect.deployment.dep1oy",
    }
    payload = sent["payload"]
    elapsed = payload["elapsed_seconds"]
    if api_version == "v1":
        assert elapsed == 150, payload  # v1 says only how long it was Ready
    else:
        assert 170 <= elapsed < 179, payload  # since its creationTime, by the guard's clock
    assert payload == {
        "session_id": session_id,
        "size": "standard",
        "api_version": api_version,
        "elapsed_seconds": elapsed,
        "billed_minutes": 3,
        "estimated_cost": 0.15,
        "currency": "USD",
        "stopped_by": "guard",
        "reason": "the flow-run process 4242 died",
        "final_status": "Stopped",
        "stop_seconds": payload["stop_seconds"],
    }
    assert isinstance(payload["stop_seconds"], float)
