"""A render-batch run's session is stopped whatever ends the run, end to end.

For each scenario a ``render-batch`` deployment run is started on the real worker with a
long job, the test waits until the job is in progress (the session Ready and its rolling
lease renewed at least once; for (j), until its v1 create has made the session while the
emulator holds the answer), triggers the scenario, and reads the emulator's ledger until
the session has ended. It then checks which teardown layer ended it (ledger, flow-run
state and the ``arr.session.stopped`` / ``arr.reaper.stopped`` events): each scenario
names the one layer that must, and bounds the time it may take to, so a layer that stops
working fails its scenario instead of handing the session to the next layer down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.states import Cancelling

from arr_prefect.flows.session import OWNER_TAG_PREFIX
from tests.e2e._stack import (
    LEASE_MINUTES,
    TIME_SCALE,
    Stack,
    StackError,
    parse_time,
    session_entry,
    tail,
)
from tests.e2e.conftest import NOT_MEASURED, ScenarioResult, record

pytestmark = pytest.mark.e2e

T = TypeVar("T")

LEASE_SECONDS = LEASE_MINUTES * 60
"""The rolling lease in emulated seconds: the most a scenario may bill past its trigger."""
REAL_LEASE = LEASE_SECONDS / TIME_SCALE
ACTIVE = ("Starting", "Ready")
# How long code (finally, hooks) may take to stop the session, in real seconds. The lease
# would end it after REAL_LEASE anyway: code that stops it must beat the lease.
CODE_STOP_WITHIN = REAL_LEASE
# Billed at most one rolling lease past the trigger. The keeper sets the lease to the
# service's own elapsed time (whole seconds, rounded down) plus the rolling lease, so it
# never ends later than lease after a renewal that began before the trigger. The only
# slack is measurement: the trigger's emulated instant is read from the ledger (millisecond
# timestamps, half a loopback request apart) and a renewal read in flight at the trigger is
# answered a few milliseconds after it; 2 emulated seconds (0.1 s real) bound both.
OVERRUN_TOLERANCE = 2.0
JOB = {"frames": 1000, "seconds_per_frame": 60.0}
"""The sample job: 1000 emulated minutes, far longer than any scenario."""
FLOW_TIMEOUT_SECONDS = 12.0
"""Real seconds: the flow's timeout in scenario (f), past Ready and a lease renewal."""
GUARD_STOP_WITHIN = 3.0
"""Real seconds from a SIGKILL of the flow-run process to the guard's stop (60 emulated
seconds, half the lease; measured 0.6 s on a loaded 2-core machine). Prefect's crash hook,
which starts a new Python process that imports Prefect and the flow, takes 5-15 s here."""
HOOK_LEASE_MINUTES = 20.0
"""Scenario (g)'s rolling lease (60 real seconds): long enough for Prefect's cancellation
hook, run by the worker in a new process once the flow-run process has exited, to act
before the lease would end the session."""
HOOK_STOP_WITHIN = HOOK_LEASE_MINUTES * 60 / TIME_SCALE
HELD_CREATE_SECONDS = 600.0
"""Emulated seconds (30 real) the emulator holds the answer of scenario (j)'s v1 create,
its session already made: the flow-run process is killed long before it comes."""
GUARD_CREATE_STOP_WITHIN = 3.0
"""Real seconds from a SIGKILL during a v1 create to the guard's stop of the session that
create made (60 emulated seconds, half the lease): the guard lists the account's sessions
at once and finds it by its lease's fingerprint; measured 0.39 s on a loaded 2-core
machine. Without the guard nothing knows the session: its lease ends it (start-up plus
one lease, 7.5 s real here) and this row reads "rolling lease (expired)"."""


@dataclass(frozen=True)
class Scenario:
    """Something that ends a render-batch run while its job is in progress."""

    name: str
    trigger: str
    """What ends the run: cancel, sigterm, sigkill, sigkill-creating (a SIGKILL while a
    v1 create's answer is held), job-fails, timeout, cancel-stop-fails, kill-worker."""
    stopped_by: str
    """The layer that must stop the session: ``finally``, ``guard`` or ``hook:<state>``
    (as the ``arr.session.stopped`` event says)."""
    final_states: tuple[str, ...]
    """Acceptable final states of the render-batch run."""
    within: float = CODE_STOP_WITHIN
    """Real seconds from the trigger by which that layer must have stopped the session."""
    lease_minutes: float = LEASE_MINUTES
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment of the flow-run process (and of the hooks the worker runs)."""


SCENARIOS = [
    pytest.param(
        Scenario("(a) cancel via API", "cancel", "finally", ("Cancelled",)), id="a-cancel-via-api"
    ),
    pytest.param(
        Scenario("(b) SIGTERM flow run", "sigterm", "finally", ("Crashed",)),
        id="b-sigterm-flow-run",
    ),
    # No finally runs after a SIGKILL; the session guard sees its pipe close at once.
    pytest.param(
        Scenario("(c) SIGKILL flow run", "sigkill", "guard", ("Crashed",), GUARD_STOP_WITHIN),
        id="c-sigkill-flow-run",
    ),
    pytest.param(Scenario("(e) job fails", "job-fails", "finally", ("Failed",)), id="e-job-fails"),
    pytest.param(
        Scenario("(f) flow timeout", "timeout", "finally", ("TimedOut",)), id="f-flow-timeout"
    ),
    # The hook layer alone: finally's one stop attempt is refused (503), and the guard is
    # off, so only the on_cancellation hook the worker runs after the process exited can
    # stop the session before its (longer) lease ends.
    pytest.param(
        Scenario(
            "(g) cancel, finally cannot stop",
            "cancel-stop-fails",
            "hook:Cancelling",
            ("Cancelled",),
            HOOK_STOP_WITHIN,
            HOOK_LEASE_MINUTES,
            (("ARR_MAX_ATTEMPTS", "1"), ("ARR_STOP_ON_PROCESS_DEATH", "false")),
        ),
        id="g-cancel-finally-cannot-stop",
    ),
    # No ID yet: the v1 create's answer is held, its session made. The guard was told the
    # create is in flight, with its lease's fingerprint, and finds the session by it.
    pytest.param(
        Scenario(
            "(j) SIGKILL during v1 create",
            "sigkill-creating",
            "guard",
            ("Crashed",),
            GUARD_CREATE_STOP_WITHIN,
        ),
        id="j-sigkill-during-v1-create",
    ),
    # Last: it kills the worker (the next test starts another). The orphaned run sees its
    # worker gone and stops its job (WorkerLostError): its finally stops the session.
    pytest.param(
        Scenario("(d) SIGKILL worker", "kill-worker", "finally", ("Failed",)),
        id="d-sigkill-worker",
    ),
]


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped yet counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    what: str,
    describe: Callable[[], Awaitable[str]],
    step: float = 0.1,
) -> T:
    """Await ``probe`` until it gives a value, or fail after ``timeout`` real seconds with
    what was awaited and the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise StackError(
                f"timed out after {timeout:.0f}s waiting for {what}; {await describe()}"
            )
        await asyncio.sleep(step)


class Scene:
    """One scenario's run: the stack, the Prefect client, and what was seen so far."""

    def __init__(self, stack: Stack, prefect: PrefectClient, scenario: Scenario) -> None:
        self.stack = stack
        self.prefect = prefect
        self.scenario = scenario
        self.run_id: UUID | None = None
        self.session_id: str | None = None
        self.pid: int | None = None
        self.before_create: set[str] = set()
        """Sessions in the ledger before scenario (j)'s create."""
        self.trigger_file = stack.workdir / f"fail-{scenario.trigger}-{time.monotonic_ns()}"
        self.job_pids_file = stack.workdir / f"pids-{scenario.trigger}-{time.monotonic_ns()}"

    async def describe(self) -> str:
        """The last flow-run state, session ledger entry and worker log, for failures."""
        parts = []
        if self.run_id is not None:
            run = await self.prefect.read_flow_run(self.run_id)
            state = run.state
            parts.append(
                f"flow run {run.name} {state.name if state else None}"
                f" ({state.message if state else ''}), pid {run.infrastructure_pid},"
                f" tags {run.tags}"
            )
        if self.session_id is not None:
            parts.append(f"ledger entry {session_entry(self.stack.ledger(), self.session_id)}")
        else:
            parts.append(f"ledger {self.stack.ledger()}")
        parts.append(f"worker log:\n{tail(self.stack.processes['worker'].log, 25)}")
        return "; ".join(parts)

    async def start(self) -> None:
        """Start a render-batch deployment run with a long job (or a failing one)."""
        deployment = await self.prefect.read_deployment_by_name("render-batch/render-batch")
        parameters: dict[str, Any] = {
            "lease_minutes": self.scenario.lease_minutes,
            "job_timeout_minutes": 24 * 60,
            "ready_timeout_minutes": 10,
        }
        job_variables: dict[str, Any] = {}
        if self.scenario.trigger == "job-fails":
            # A command job that renders until told to fail: the failure's instant is known.
            # Bounded (60 s) so it cannot outlive a failed test by much.
            parameters["job_command"] = [
                "sh",
                "-c",
                f'i=0; while [ ! -e "{self.trigger_file}" ] && [ $i -lt 1200 ];'
                ' do sleep 0.05; i=$((i+1)); done; echo "renderer crashed" >&2; exit 3',
            ]
        elif self.scenario.trigger == "sigterm":
            # A command job with a child of its own: both must be gone after the SIGTERM.
            parameters["job_command"] = [
                "sh",
                "-c",
                f'echo $$ > "{self.job_pids_file}"; sleep 600 & echo $! >> "{self.job_pids_file}";'
                " wait",
            ]
        else:
            parameters["job_parameters"] = JOB
        env = dict(self.scenario.env)
        if self.scenario.trigger == "timeout":
            env["ARR_RENDER_BATCH_TIMEOUT_SECONDS"] = f"{FLOW_TIMEOUT_SECONDS:g}"
        if env:
            job_variables["env"] = env
        run = await self.prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters=parameters,
            job_variables=job_variables or None,
            tags=["e2e", self.scenario.trigger],
        )
        self.run_id = run.id

    async def wait_job_in_progress(self) -> None:
        """Until the run owns a Ready session whose lease was renewed, and has a pid."""

        async def in_progress() -> bool | None:
            assert self.run_id is not None
            run = await self.prefect.read_flow_run(self.run_id)
            if run.state is not None and run.state.is_final():
                raise StackError(f"the run ended before its job was in progress: {run.state}")
            owned = [
                t.removeprefix(OWNER_TAG_PREFIX) for t in run.tags if t.startswith(OWNER_TAG_PREFIX)
            ]
            if not owned or not run.infrastructure_pid:
                return None
            self.session_id = owned[0]
            self.pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
            self.stack.flow_run_pids.add(self.pid)
            entry = session_entry(self.stack.ledger(), self.session_id)
            if entry is None or entry["status"] != "Ready" or entry["extend_count"] < 1:
                return None
            return True

        await until(
            in_progress,
            timeout=90,
            what="the job to be in progress (Ready session, lease renewed)",
            describe=self.describe,
        )

    async def trigger(self) -> float:
        """Make the scenario happen; return its instant in emulated time."""
        emulated, wall = self.stack.emulated_now()
        assert self.run_id is not None
        assert self.pid is not None
        action = self.scenario.trigger
        if action == "timeout":
            run = await self.prefect.read_flow_run(self.run_id)
            assert run.start_time is not None
            # The engine arms the timeout just after the run is Running: a slightly early
            # estimate of the trigger, so the overrun measured can only be overstated.
            at = run.start_time.timestamp() + FLOW_TIMEOUT_SECONDS
            return emulated + (at - wall) * TIME_SCALE
        if action == "cancel-stop-fails":
            # The next stop of this session is answered 503; the run tries only once.
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    f"{self.stack.emulator_url}/_emulator/faults",
                    json={
                        "kind": "server_error",
                        "route": self.stop_route(),
                        "session_id": self.session_id,
                    },
                )
            response.raise_for_status()
        at = time.time()
        if action in ("cancel", "cancel-stop-fails"):
            # What the UI's Cancel button sends.
            await self.prefect.set_flow_run_state(self.run_id, Cancelling(), force=True)
        elif action == "sigterm":
            os.kill(self.pid, signal.SIGTERM)
        elif action in ("sigkill", "sigkill-creating"):
            os.kill(self.pid, signal.SIGKILL)
        elif action == "kill-worker":
            os.kill(self.stack.processes["worker"].pid, signal.SIGKILL)
        elif action == "job-fails":
            self.trigger_file.touch()
        else:  # pragma: no cover - a typo in SCENARIOS
            raise AssertionError(f"unknown trigger {action!r}")
        return emulated + (at - wall) * TIME_SCALE

    async def hold_create(self) -> None:
        """The next v1 create makes its session at once and holds the answer naming it."""
        self.before_create = {e["id"] for e in self.stack.ledger()["sessions"]}
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{self.stack.emulator_url}/_emulator/faults",
                json={"kind": "slow_create", "route": "v1.create", "seconds": HELD_CREATE_SECONDS},
            )
        response.raise_for_status()

    async def clear_held_create(self) -> None:
        """Remove the slow_create fault if no create used it (a failed scenario)."""
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"{self.stack.emulator_url}/_emulator/faults"
            pending = (await http.get(url)).json()["scripted"]
            if any(fault["kind"] == "slow_create" for fault in pending):
                (await http.delete(url)).raise_for_status()

    async def wait_create_in_flight(self) -> None:
        """Until the run's v1 create has made its session while its answer is held (the
        run does not know the ID: no owner tag), and the run has a pid."""

        async def in_flight() -> bool | None:
            assert self.run_id is not None
            run = await self.prefect.read_flow_run(self.run_id)
            if run.state is not None and run.state.is_final():
                raise StackError(f"the run ended before its create was in flight: {run.state}")
            made = [e for e in self.stack.ledger()["sessions"] if e["id"] not in self.before_create]
            if not made or not run.infrastructure_pid:
                return None
            [entry] = made
            if entry["api_version"] != "v1":
                raise StackError(f"the stack's runs do not use v1: {entry}")
            if any(t.startswith(OWNER_TAG_PREFIX) for t in run.tags):
                raise StackError(f"the create answered though held: tags {run.tags}")
            self.session_id = entry["id"]
            self.pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
            self.stack.flow_run_pids.add(self.pid)
            return True

        await until(
            in_flight,
            timeout=90,
            what="the run's v1 create to make its session, its answer held",
            describe=self.describe,
            step=0.05,
        )

    def stop_route(self) -> str:
        """The emulator's route name for stopping this run's session."""
        assert self.session_id is not None
        entry = session_entry(self.stack.ledger(), self.session_id)
        assert entry is not None
        return "v1.stop" if entry["api_version"] == "v1" else "v2021.stop"

    def job_pids(self) -> list[int]:
        """The PIDs the command job wrote down (itself and its child)."""
        try:
            return [int(p) for p in self.job_pids_file.read_text().split()]
        except FileNotFoundError:
            return []

    async def wait_job_processes_gone(self) -> None:
        """Until every PID the job wrote down has exited (the flow-run process may itself
        be killed by its worker 10 s after SIGTERM: the job must be gone well before)."""
        pids = self.job_pids()
        assert len(pids) == 2, f"the job wrote down {pids}"

        async def gone() -> bool | None:
            return True if all(pid_gone(p) for p in pids) else None

        await until(gone, timeout=15, what=f"job processes {pids} to exit", describe=self.describe)

    async def read_run(self) -> FlowRun:
        assert self.run_id is not None
        return await self.prefect.read_flow_run(self.run_id)

    async def wait_session_ended(self) -> dict[str, Any]:
        """Until the ledger shows the session over. If the run is over and nothing stopped
        the session, the reaper deployment is run once (grace 0), as its schedule would."""
        assert self.session_id is not None
        session_id = self.session_id

        async def ended() -> dict[str, Any] | None:
            entry = session_entry(self.stack.ledger(), session_id)
            assert entry is not None
            if entry["status"] not in ACTIVE:
                return entry
            return None

        return await until(
            ended,
            timeout=self.scenario.lease_minutes * 60 / TIME_SCALE + 30,
            what=f"session {session_id} to end",
            describe=self.describe,
            step=0.05,
        )

    async def wait_final(self, run_id: UUID, what: str) -> FlowRun:
        async def final() -> FlowRun | None:
            run = await self.prefect.read_flow_run(run_id)
            return run if run.state is not None and run.state.is_final() else None

        return await until(final, timeout=60, what=what, describe=self.describe, step=0.25)

    async def wait_run_final(self) -> FlowRun:
        """Until the render-batch run is over."""
        assert self.run_id is not None
        return await self.wait_final(self.run_id, "the render-batch run to end")

    async def stop_events(self) -> list[tuple[float, str, Event]]:
        """(occurred, who, event) of every event saying who stopped the session, oldest
        first."""
        page = await self.prefect.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=["arr.session.stopped", "arr.reaper.stopped"]),
                resource=EventResourceFilter(id=[f"arr.session.{self.session_id}"]),
            ),
            limit=50,
        )
        found = []
        for event in page.events:
            who = (
                "reaper"
                if event.event == "arr.reaper.stopped"
                else str(event.payload.get("stopped_by", "?"))
            )
            found.append((event.occurred.timestamp(), who, event))
        return sorted(found, key=lambda f: f[0])

    async def who_stopped(self, entry: dict[str, Any]) -> tuple[str, Event | None]:
        """The ledger says stopped or expired; for a stop, Prefect's events say by whom
        (the earliest: a later hook stopping an already stopped session is a no-op)."""
        if entry["end_reason"] == "expired":
            return "rolling lease (expired)", None
        if entry["end_reason"] != "stopped":
            return f"? ({entry['end_reason']})", None

        async def events() -> list[tuple[float, str, Event]] | None:
            return (await self.stop_events()) or None

        found = await until(
            events,
            timeout=20,
            what=f"an event saying who stopped session {self.session_id}",
            describe=self.describe,
            step=0.5,
        )
        return found[0][1], found[0][2]


SESSION_PAYLOAD = ("session_id", "size", "api_version", "elapsed_seconds", "billed_minutes")
"""Payload fields every arr.session.* event carries (issue 12), never null in a stop."""


def check_stop_event(event: Event, session_id: str) -> None:
    """The arr.session.stopped event, whichever layer emitted it (finally, a hook, the
    guard), carries the session events' payload and is related to the flow run, its flow
    and its deployment."""
    context = f"{event.event} {event.payload} related {event.related}"
    for name in SESSION_PAYLOAD:
        assert event.payload.get(name) is not None, f"no {name}: {context}"
    assert event.payload["session_id"] == session_id, context
    assert event.payload.get("final_status") == "Stopped", context
    assert {"estimated_cost", "currency", "stop_seconds"} <= set(event.payload), context
    roles = {r.role for r in event.related}
    assert {"flow-run", "flow", "deployment"} <= roles, context


@dataclass(frozen=True)
class Observed:
    """What a scenario measured."""

    entry: dict[str, Any]
    """The session's final ledger entry."""
    overrun: float
    """Emulated seconds billed after the trigger."""
    observed_real: float
    """Real seconds from the trigger until the test saw the session over."""
    who: str
    state: str
    event: Event | None
    """The arr.session.stopped (or arr.reaper.stopped) event of who stopped it."""


async def observe(scene: Scene) -> Observed:
    """Start the run, wait for its job (or for its create, held), trigger the scenario,
    and watch the session end."""
    if scene.scenario.trigger == "sigkill-creating":
        await scene.hold_create()
        await scene.start()
        await scene.wait_create_in_flight()
    else:
        await scene.start()
        await scene.wait_job_in_progress()
    triggered_real = time.monotonic()
    triggered = await scene.trigger()
    entry = await scene.wait_session_ended()
    observed_real = time.monotonic() - triggered_real
    assert entry["ended_at"] is not None
    overrun = parse_time(entry["ended_at"]) - triggered
    run = await scene.wait_run_final()
    who, event = await scene.who_stopped(entry)
    state = (run.state.name if run.state else None) or "?"
    return Observed(entry, overrun, observed_real, who, state, event)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_session_is_stopped_within_one_lease(live_worker: Stack, scenario: Scenario) -> None:
    """Whatever ends the run, its session ends, billed at most one rolling lease past it."""
    stack = live_worker
    async with PrefectClient(stack.api_url) as prefect:
        scene = Scene(stack, prefect, scenario)
        try:
            seen = await observe(scene)
            if scenario.trigger == "sigterm":
                await scene.wait_job_processes_gone()
        except BaseException as exc:
            record(
                ScenarioResult(
                    scenario.name,
                    f"FAILED: {type(exc).__name__}",
                    *NOT_MEASURED,
                    expected=scenario.stopped_by,
                    lease_minutes=scenario.lease_minutes,
                )
            )
            raise
        finally:
            if scenario.trigger == "sigkill-creating":
                await scene.clear_held_create()
    seconds_to_stop = max(0.0, seen.overrun / TIME_SCALE)
    record(
        ScenarioResult(
            scenario.name,
            seen.who,
            seconds_to_stop,
            seen.overrun,
            seen.state,
            expected=scenario.stopped_by,
            lease_minutes=scenario.lease_minutes,
        )
    )
    context = f"{scenario.name}: stopped by {seen.who}, run {seen.state}, entry {seen.entry}"

    assert seen.who == scenario.stopped_by, context
    assert seen.entry["end_reason"] == "stopped", context
    if seen.event is not None and seen.event.event == "arr.session.stopped":
        check_stop_event(seen.event, seen.entry["id"])
    assert seconds_to_stop <= scenario.within, context
    assert seen.overrun <= scenario.lease_minutes * 60 + OVERRUN_TOLERANCE, context
    assert seen.state in scenario.final_states, context
    ledger = stack.ledger()
    assert ledger["running"] == 0, f"sessions left running: {ledger}"


async def test_replacement_worker_runs_a_batch_to_completion(live_worker: Stack) -> None:
    """A worker (a new one, once (d) killed the first) runs a batch through; its session stops."""
    stack = live_worker
    async with PrefectClient(stack.api_url) as prefect:
        deployment = await prefect.read_deployment_by_name("render-batch/render-batch")
        created = await prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "lease_minutes": LEASE_MINUTES,
                # 3 emulated minutes of frames: 9 real seconds, a few lease renewals.
                "job_parameters": {"frames": 3, "seconds_per_frame": 60.0},
            },
            tags=["e2e", "success"],
        )
        scene = Scene(stack, prefect, Scenario("success", "none", "finally", ("Completed",)))
        scene.run_id = created.id
        run = await scene.wait_final(created.id, "the render-batch run to complete")
        assert run.state is not None
        assert run.state.name == "Completed", await scene.describe()
    [session_id] = [
        t.removeprefix(OWNER_TAG_PREFIX) for t in run.tags if t.startswith(OWNER_TAG_PREFIX)
    ]
    entry = session_entry(stack.ledger(), session_id)
    assert entry is not None
    assert (entry["status"], entry["end_reason"]) == ("Stopped", "stopped"), entry
    assert entry["extend_count"] >= 1, entry
    assert stack.ledger()["running"] == 0
