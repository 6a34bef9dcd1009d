"""The session guard: a process that registered a session and then died by SIGKILL has the
session stopped within seconds; a released session is left alone; a process killed while
its create is in flight has the session that create made stopped, and no other.

Real processes on loopback: the emulator serves HTTP from a thread of this process, a
child process owns the session and its guard, and the test kills the child. How the guard
tells the create's session from others is tested in-process, on the emulator's clock.
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
from arr_prefect.models import SessionSize
from arr_prefect.settings import ArrSettings, load_settings

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


# ------------------------------------------------------------- killed while creating

CREATING_CHILD = """
import asyncio, sys
from datetime import timedelta
from arr_prefect.client import ArrClient
from arr_prefect.flows import stopped_if_process_dies as layer
from arr_prefect.flows.api_calls import ClientCalls, chosen_session_id
from arr_prefect.flows.create_shielded import create_shielded
from arr_prefect.flows.report import SessionReport
from arr_prefect.guard import session_guard
from arr_prefect.models import SessionSize
from arr_prefect.settings import load_settings

url, api_version, account, key = sys.argv[1:5]
# As in a flow-run process a worker started (the guard runs there only).
layer._guard_for = lambda arr: session_guard()

async def main() -> None:
    settings = load_settings(
        _env_file=None, account_id=account, account_key=key,
        service_url=url, sts_url=url, api_version=api_version,
    )
    async with ArrClient(settings) as arr:
        # rendering_session's order: the ID the client names (2021-01-01) is watched
        # first, then the create is sent; v1's is in flight until it answers.
        session_id = chosen_session_id(arr, None)
        guard = layer.stopped_if_process_dies(arr, None, session_id)
        print(guard.guard.process.pid, flush=True)
        await create_shielded(
            ClientCalls(arr), SessionReport(), guard, [], session_id,
            timedelta(hours=1), SessionSize.STANDARD, None,
        )
        await asyncio.sleep(3600)

asyncio.run(main())
"""

HELD_ANSWER_SECONDS = 120.0
"""How long the emulator holds the create's answer: far past the kill."""


@pytest.mark.parametrize(
    ("api_version", "create_route"),
    [
        pytest.param("v1", "v1.create", id="v1-service-names-it"),
        pytest.param("2021-01-01", "v2021.create", id="2021-client-names-it"),
    ],
)
def test_sigkill_while_the_create_is_in_flight_stops_its_session(
    served: tuple[Emulator, str], api_version: str, create_route: str
) -> None:
    """SIGKILL the process while its create's answer is held (the session made, its ID
    not yet known there): the guard stops that session in seconds, and leaves alone
    another run's session of the same account, size and whole lease."""
    emulator, url = served
    emulator.faults.add("slow_create", create_route, seconds=HELD_ANSWER_SECONDS)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARR_")}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CREATING_CHILD,
            url,
            api_version,
            DEFAULT_ACCOUNT_ID,
            DEFAULT_ACCOUNT_KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    guard_pid = int(child.stdout.readline())
    [made] = eventually(lambda: emulator.running() or None, 60, "the create to make a session")
    # Another run's: a fingerprint one microsecond off, or (2021-01-01) another ID.
    other_lease = made.max_lease + timedelta(microseconds=1 if made.max_lease.microseconds else 0)
    with emulator.lock:
        if api_version == "v1":
            other = emulator.state.create_v1(
                DEFAULT_ACCOUNT_ID, size=SessionSize.STANDARD, max_lease=other_lease
            )
        else:
            other, _ = emulator.state.create_v2021(
                DEFAULT_ACCOUNT_ID, "another-run", size=SessionSize.STANDARD, max_lease_minutes=60
            )
    killed = time.monotonic()
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    eventually(
        lambda: [s.id for s in emulator.running()] == [other.id] or None,
        STOPPED_WITHIN,
        "the created session stopped",
    )
    took = time.monotonic() - killed
    entry = next(e for e in emulator.ledger()["sessions"] if e["id"] == made.id)
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped")
    print(f"session stopped {took:.2f} s after the SIGKILL during its create")
    eventually(lambda: pid_gone(guard_pid), 10, "the guard to exit")
    assert [s.id for s in emulator.running()] == [other.id]
    with emulator.lock:
        emulator.state.stop(DEFAULT_ACCOUNT_ID, other.id)


LEASE = timedelta(minutes=20, microseconds=424242)
"""The lease of the create in flight, its fingerprint in its microseconds."""
LOOK_FOR = 70.0
"""Seconds (the emulator's clock) the guard looks for the create's session."""
IN_FLIGHT = 10.0
"""Seconds the create had been in flight at the guard's first look."""


def _in_flight(settled: bool = False) -> guard_module._Creating:
    return guard_module._Creating(
        key="k1",
        lease=LEASE,
        size="Standard",
        sent_at=0.0,
        settled=settled,
        message={},
    )


def _settings() -> ArrSettings:
    return load_settings(
        _env_file=None,
        account_id=DEFAULT_ACCOUNT_ID,
        account_key=DEFAULT_ACCOUNT_KEY,
        service_url="http://127.0.0.1:9",
        sts_url="http://127.0.0.1:9",
        api_version="v1",
    )


def _make(emulator: Emulator, lease: timedelta, size: SessionSize = SessionSize.STANDARD) -> str:
    with emulator.lock:
        return emulator.state.create_v1(DEFAULT_ACCOUNT_ID, size=size, max_lease=lease).id


async def _look(
    emulator: Emulator,
    clock: VirtualClock,
    known: frozenset[str] = frozenset(),
    *,
    settled: bool = False,
) -> tuple[guard_module._Stopped | None, float]:
    """What the guard's look for the create in flight stopped, and how long it looked."""
    start = clock.time()
    async with ArrClient(_settings(), transport=emulator.transport(), clock=clock) as arr:
        stopped = await guard_module._look_and_stop(
            arr, _in_flight(settled), known, in_flight=IN_FLIGHT, look_for=LOOK_FOR
        )
    return stopped, clock.time() - start


def _others(emulator: Emulator, case: str) -> list[str]:
    """Sessions the create in flight did not make, however alike."""
    if case == "another-fingerprint":
        return [_make(emulator, LEASE + timedelta(microseconds=1))]
    if case == "same-whole-lease":
        return [_make(emulator, timedelta(minutes=20))]
    if case == "another-size":
        return [_make(emulator, LEASE, SessionSize.PREMIUM)]
    if case == "ready-before-the-create":
        made = _make(emulator, LEASE)
        # Ready 40 s (startup 0): longer than the create has been in flight (10 s).
        assert isinstance(emulator.clock, VirtualClock)
        emulator.clock.advance(40)
        return [made]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("another-fingerprint", id="another-fingerprint"),
        pytest.param("same-whole-lease", id="same-whole-lease"),
        pytest.param("another-size", id="another-size"),
        pytest.param("ready-before-the-create", id="ready-before-the-create"),
    ],
)
async def test_guard_never_stops_a_session_its_create_did_not_make(case: str) -> None:
    """Another run's session is left running, however like the create's it is: the guard
    looks for the whole window, finds nothing, and stops nothing."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock, startup_seconds=0)
    others = _others(emulator, case)
    stopped, looked = await _look(emulator, clock)
    assert stopped is None
    assert sorted(s.id for s in emulator.running()) == sorted(others)
    assert LOOK_FOR <= looked < LOOK_FOR + 1


async def test_guard_stops_the_creates_session_and_no_other() -> None:
    """Among sessions alike, the guard stops the one with the create's exact lease and
    size, Ready no longer than the create has been in flight, at its first look."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock, startup_seconds=0)
    others = [
        _make(emulator, LEASE + timedelta(microseconds=1)),
        _make(emulator, LEASE, SessionSize.PREMIUM),
        _make(emulator, timedelta(minutes=20)),
    ]
    clock.advance(5)  # they are older; the create's session is made just now
    made = _make(emulator, LEASE)
    stopped, looked = await _look(emulator, clock)
    assert stopped is not None
    assert (stopped.session_id, stopped.create_key) == (made, "k1")
    assert looked < 1
    assert sorted(s.id for s in emulator.running()) == sorted(others)
    [entry] = [e for e in emulator.ledger()["sessions"] if e["id"] == made]
    assert entry["end_reason"] == "stopped"


async def test_guard_stops_neither_of_two_sessions_with_the_creates_lease() -> None:
    """Two candidates mean one may be another run's: the guard stops neither."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock, startup_seconds=0)
    both = sorted([_make(emulator, LEASE), _make(emulator, LEASE)])
    stopped, _ = await _look(emulator, clock)
    assert stopped is None
    assert sorted(s.id for s in emulator.running()) == both


async def test_guard_leaves_a_session_it_was_told_of() -> None:
    """A session the process named to the guard (watched, or released after teardown) is
    never taken for the create's, whatever its lease."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock, startup_seconds=0)
    named = _make(emulator, LEASE)
    stopped, _ = await _look(emulator, clock, frozenset({named}))
    assert stopped is None
    assert [s.id for s in emulator.running()] == [named]


async def test_guard_keeps_looking_for_a_session_made_after_its_first_look() -> None:
    """The service makes the session (and its answer goes to nobody) after the guard's
    first look: a later look, within the window, finds and stops it."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock, startup_seconds=0)
    made: list[str] = []

    async def late_create() -> None:
        await clock.sleep(22)
        made.append(_make(emulator, LEASE))

    creating = asyncio.create_task(late_create())
    stopped, looked = await _look(emulator, clock)
    await creating
    assert stopped is not None
    assert stopped.session_id == made[0]
    poll = _settings().poll_interval
    assert 22 <= looked <= 22 + poll + 1
    assert emulator.running() == []


async def test_a_failed_create_gets_one_look() -> None:
    """A create that failed while the process lived is looked for once at its exit (its
    session stopped if it made one), without waiting for anything to appear."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock, startup_seconds=0)
    stopped, looked = await _look(emulator, clock, settled=True)
    assert stopped is None
    assert looked < 1
    made = _make(emulator, LEASE)
    stopped, _ = await _look(emulator, clock, settled=True)
    assert stopped is not None
    assert stopped.session_id == made


def test_registrations_follow_the_create_to_its_answer() -> None:
    """Read from the pipe: a create is in flight until a watch names the session it made,
    and settled (looked for once) after it failed; every named ID is known."""
    process = _NotStarted()
    guard = SessionGuard(process)  # type: ignore[arg-type]
    settings = _settings()
    guard.creating("answered", LEASE, "Standard", settings, "run")
    guard.creating("failed", LEASE, "Standard", settings, "run")
    guard.creating("in-flight", LEASE, "Standard", settings, "run")
    guard.watch("s1", settings, "run", created="answered")
    guard.create_failed("failed")
    guard.watch("s2", settings, "run")
    guard.release("s2")
    lines = process.stdin.data.splitlines(keepends=True)
    watched, creating, known = guard_module._read_registrations(lines)
    assert set(watched) == {"s1"}
    assert known == {"s1", "s2"}
    assert set(creating) == {"failed", "in-flight"}
    entries = {key: guard_module._Creating.of(message) for key, message in creating.items()}
    assert (entries["failed"].settled, entries["in-flight"].settled) == (True, False)
    assert entries["in-flight"].lease == LEASE
    assert entries["in-flight"].message["settings"]["account_key"] == DEFAULT_ACCOUNT_KEY
