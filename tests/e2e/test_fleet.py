"""The fleet, end to end: PostgreSQL, a Prefect server on it, three process workers each in
its own empty directory with only the built wheel installed (as a second machine would
have), the account quota at 3 in the emulator and as a Prefect global concurrency limit.

Phases, each a line of the fleet table (printed at the end of the run):

1. 12 render-batch runs at once: every run completes, never more than 3 sessions at once
   (the emulator's ledger), no create refused for the quota.
2. Host loss: a worker, its flow runs and their session guards are SIGKILLed mid-run. The
   zombie-run automation from automations/ marks the runs Crashed once their heartbeats
   stop, and the reaper's trigger stops their sessions well before their rolling ARR lease
   would end them; their Prefect slots come back within the slot lease plus one
   repossessor pass (75 s); the other runs complete meanwhile, a survivor that takes a lost
   run's slot before the reaper has stopped that run's session (3 runs are submitted as
   the slots come back) waiting in its create for the service's quota (403
   QuotaExceeded, ``ARR_QUOTA_WAIT``) instead of failing.
3. The Prefect server restarts mid-run: the runs go on, every session is stopped, and every
   run is in the records with its final state and its summary.
4. PostgreSQL is stopped for 30 s mid-run: the same.

Run it alone with ``pytest -m fleet``. It takes several minutes (see the README).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import _fleet
from tests.e2e._fleet import (
    FINAL_TYPES,
    HEARTBEAT_SECONDS,
    LEASE_MINUTES,
    QUOTA,
    QUOTA_WAIT_SECONDS,
    REPOSSESSOR_LOOP_SECONDS,
    SLOT_LEASE_SECONDS,
    ZOMBIE_WINDOW,
    FleetRow,
    FleetStack,
    billed_minutes,
    parent_pid,
    peak_concurrency,
    run_pid,
    session_guards_of,
    sigkill,
)
from tests.e2e._postgres import missing_reason, temporary_postgres
from tests.e2e._stack import free_port, parse_time, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

RUNS = 12
FAULT_RUNS = 6
PHASE_TIMEOUT = 600.0
PG_DOWN_SECONDS = 30.0
SLOT_RETURN_SLACK = 15.0
"""Real seconds allowed beyond lease + repossessor loop: the revocation is a queued task."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetStack]:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("fleet")
    started = time.monotonic()
    with temporary_postgres(free_port(), workdir / "postgres.log") as pg:
        stack = FleetStack(workdir, pg=pg, emulator_args=["--max-sessions", str(QUOTA)])
        try:
            stack.start_server()
            stack.start_emulator()
            venv = stack.ensure_venv()
            stack.wait_for_server()
            stack.deploy()
            stack.create_limit()
            for _ in range(3):
                stack.add_worker()
            _fleet.timings.append(
                f"fleet set-up {time.monotonic() - started:.0f} s (PostgreSQL, server, wheel"
                f" built in {venv.build_seconds:.0f} s, venv in {venv.install_seconds:.0f} s,"
                " deployments, limit, 3 workers)"
            )
            yield stack
        finally:
            stack.stop()
            table = workdir / "fleet-table.txt"
            if _fleet.rows:
                table.write_text(_fleet.render_table() + "\n")


def ledger_entries(fleet: FleetStack, session_ids: set[str]) -> list[dict[str, Any]]:
    return [e for e in fleet.ledger()["sessions"] if e["id"] in session_ids]


def until_sessions_running(fleet: FleetStack, count: int) -> None:
    wait_for(
        lambda: True if fleet.ledger()["running"] >= count else None,
        timeout=PHASE_TIMEOUT,
        what=f"{count} sessions running",
        step=0.25,
    )


def until_every_run_started(fleet: FleetStack, ids: list[str]) -> None:
    """Wait until every run's flow is running (or over): none is still being started.

    A flow-run process that starts while the API is away exits at once (Prefect's engine
    gives up on its first request) and the run is marked Crashed before any of our code
    ran: no session, nothing billed, but nothing of ours under test either. The fault
    phases are about runs caught mid-run, so they begin once every run is past its start.
    """

    def started() -> bool | None:
        runs = fleet.runs(ids)
        types = [(r["state"] or {}).get("type") for r in runs]
        return (
            True if len(runs) == len(ids) and all(t in {"RUNNING", *FINAL_TYPES} for t in types)
            else None
        )  # fmt: skip

    wait_for(started, timeout=PHASE_TIMEOUT, what="every run started", step=0.25)


def record_phase(
    fleet: FleetStack,
    phase: str,
    ids: list[str],
    runs: list[dict[str, Any]],
    started: float,
    refusals_before: int,
    note: str,
) -> tuple[list[dict[str, Any]], int, int]:
    """Measure a finished phase, add its row; return its sessions, peak and refusals."""
    owned = fleet.sessions_of(ids)
    session_ids = {s for sessions in owned.values() for s in sessions}
    ledger = fleet.ledger()
    entries = [e for e in ledger["sessions"] if e["id"] in session_ids]
    now = parse_time(ledger["time"])
    peak = peak_concurrency(ledger["sessions"], now)  # every session ever: the whole fleet
    refusals = int(ledger["quota_refusals"]) - refusals_before
    waits = fleet.slot_waits(ids)
    quota_waits = fleet.create_waits(ids)
    completed = sum(1 for r in runs if r["state"]["type"] == "COMPLETED")
    _fleet.rows.append(
        FleetRow(
            phase=phase,
            runs=f"{completed}/{len(ids)}",
            peak=peak,
            refusals=refusals,
            wait_total=sum(waits),
            wait_max=max(waits, default=0.0),
            billed_minutes=billed_minutes(entries),
            seconds=time.monotonic() - started,
            note=note,
            quota_wait_total=sum(quota_waits),
            quota_wait_max=max(quota_waits, default=0.0),
        )
    )
    return entries, peak, refusals


def test_fleet_respects_the_quota_and_survives_faults(fleet: FleetStack) -> None:
    """12 runs on 3 workers never exceed a quota of 3; a lost host, a server restart and a
    30 s database outage lose no session and no run record."""
    # --- 1. twelve runs at once ---------------------------------------------------------
    started = time.monotonic()
    ids = fleet.submit(RUNS)
    runs = fleet.wait_final(ids, PHASE_TIMEOUT)
    entries, peak, refusals = record_phase(
        fleet, f"{RUNS} runs at once", ids, runs, started, 0, "baseline"
    )
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"] * RUNS
    assert len(entries) == RUNS
    assert all(e["end_reason"] == "stopped" for e in entries)
    assert peak == QUOTA, "the runs never used the whole quota, or exceeded it"
    assert refusals == 0
    assert fleet.ledger()["running"] == 0
    assert not fleet.held_leases(), "a slot was not given back"

    # --- 2. a host dies: its worker and its flow runs, SIGKILLed -------------------------
    zombie = fleet.create_zombie_automation()
    started = time.monotonic()
    refusals_before = fleet.ledger()["quota_refusals"]
    ids = fleet.submit(FAULT_RUNS)
    until_sessions_running(fleet, QUOTA)
    workers = {fleet.processes[name].pid: name for name in fleet.workers}
    runs = fleet.runs(ids)
    owned = fleet.sessions_of(ids)
    active = {e["id"] for e in fleet.ledger()["sessions"] if e["status"] in ("Starting", "Ready")}
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        pid = run_pid(run)
        if pid is not None and (worker := workers.get(parent_pid(pid) or -1)):
            by_worker.setdefault(worker, []).append(run)
    victim = next(
        name
        for name, its_runs in by_worker.items()
        if any(set(owned[str(r["id"])]) & active for r in its_runs)
    )
    killed_runs = by_worker[victim]
    killed_ids = {str(r["id"]) for r in killed_runs}
    killed_sessions = {s for r in killed_runs for s in owned[str(r["id"])]} & active
    # A lost host takes the runs' session guards (arr_prefect.guard, each in its own
    # process group) down with it: only the rolling lease can end these sessions. Found
    # before the kill's instant is read: scanning /proc must not delay the kills after it.
    run_pids = [pid for run in killed_runs if (pid := run_pid(run)) is not None]
    assert len(run_pids) == len(killed_runs)
    guards = [guard for pid in run_pids for guard in session_guards_of(pid)]
    emulated_kill, _ = fleet.emulated_now()
    killed_at = time.monotonic()
    sigkill(fleet.processes[victim].pid)
    for pid in [*guards, *run_pids]:
        sigkill(pid)
    fleet.flow_run_pids.update(run_pids)
    fleet.workers.remove(victim)

    def slots_back() -> float | None:
        held = set(fleet.held_leases().values())
        return time.monotonic() - killed_at if not held & killed_ids else None

    slot_return = wait_for(
        slots_back,
        timeout=SLOT_LEASE_SECONDS + REPOSSESSOR_LOOP_SECONDS + 60,
        what="the lost host's slots to come back",
    )
    # Runs that start now take the lost slots while the lost sessions still run (until the
    # reaper stops them, about 150 s after the kill): the service refuses their creates for
    # its quota, and they wait in the create (ARR_QUOTA_WAIT) instead of failing.
    late = fleet.submit(QUOTA)

    def sessions_over() -> list[dict[str, Any]] | None:
        entries = ledger_entries(fleet, killed_sessions)
        return entries if all(e["ended_at"] for e in entries) else None

    ended = wait_for(sessions_over, timeout=PHASE_TIMEOUT, what="the lost host's sessions to end")
    reaped_after = time.monotonic() - killed_at
    # Counted from the kill, or from Ready for a session still Starting then (ARR_API.md:
    # the lease is the total since start, so such a session's lease runs from its Ready).
    session_overrun = max(
        parse_time(e["ended_at"]) - max(emulated_kill, parse_time(e["ready_at"] or e["ended_at"]))
        for e in ended
    )
    # The zombie automation marks a run Crashed once its heartbeats stop, so a run killed
    # before its first heartbeat (one still waiting for a slot, seconds old) is never
    # marked: Prefect leaves it Running. Such a run holds no session; the runs that held
    # one are the ones that must be Crashed (and were reaped above).
    owning_ids = sorted(i for i in killed_ids if set(owned[i]) & killed_sessions)
    crashed = fleet.wait_final(owning_ids, PHASE_TIMEOUT)
    fleet.delete_automation(zombie)  # the later phases' outages must not look like lost hosts

    ids = [*ids, *late]
    survivors = [i for i in ids if i not in killed_ids]
    fleet.add_worker()  # a replacement host, for the next phases
    final = fleet.wait_final(survivors, PHASE_TIMEOUT)
    lease = LEASE_MINUTES * 60
    # A survivor that took a lost run's slot (back at ~75 s) before the reaper stopped that
    # run's session (~150 s) was refused by the service's quota meanwhile: its create waited.
    # (Task runs are recorded from their events, which may trail the flow run's state.)
    survivor_waits = wait_for(
        lambda: w if len(w := fleet.create_waits(survivors)) == len(survivors) else None,
        timeout=60,
        what="the survivors' create-session task runs to be recorded",
    )
    waited = [w for w in survivor_waits if w >= 1.0]
    wait_lines = fleet.quota_wait_lines()
    entries, peak, refusals = record_phase(
        fleet,
        f"SIGKILL {victim} + its {len(killed_runs)} flow runs",
        ids,
        final + crashed,
        started,
        refusals_before,
        f"lost runs marked Crashed (heartbeats every {HEARTBEAT_SECONDS} s, window"
        f" {ZOMBIE_WINDOW} s); their sessions ({len(killed_sessions)}) stopped by the reaper"
        f" {session_overrun:.0f} s emulated ({reaped_after:.0f} s real) after the kill or their"
        f" Ready, if later (lease {lease:.0f} s); slots back after {slot_return:.0f} s (bound"
        f" {SLOT_LEASE_SECONDS + REPOSSESSOR_LOOP_SECONDS:.0f} s); {len(late)} runs started"
        f" then, {len(waited)} survivors waited for the service's quota in their create (longest"
        f" {max(waited, default=0.0):.0f} s real, {len(wait_lines)} waits logged, ARR_QUOTA_WAIT"
        f" {QUOTA_WAIT_SECONDS:.0f} s emulated)",
    )
    # Every survivor completes: one refused by the service's quota while the lost host's
    # sessions still ran waited in its create (ARR_QUOTA_WAIT) for the reaper to stop them.
    assert [r["state"]["type"] for r in final] == ["COMPLETED"] * len(final), [
        (r["state"]["type"], r["state"]["message"]) for r in final
    ]
    assert refusals > 0, "no run took a lost slot while the lost sessions ran: gap not tested"
    # Each refusal is one wait, logged by the client of the run that waited.
    assert len(wait_lines) == refusals, wait_lines
    assert killed_sessions, "the victim held no session"
    # Nothing of the lost host is left to stop them (finally, hooks, guard): the reaper did.
    assert all(e["end_reason"] == "stopped" for e in ended), "who ended the lost sessions?"
    assert [r["state"]["type"] for r in crashed] == ["CRASHED"] * len(crashed)
    assert all("heartbeats" in (r["state"]["message"] or "") for r in crashed), crashed
    assert session_overrun <= lease * 0.75, "the reaper came no sooner than the lease"
    assert slot_return <= SLOT_LEASE_SECONDS + REPOSSESSOR_LOOP_SECONDS + SLOT_RETURN_SLACK
    assert peak <= QUOTA
    assert fleet.ledger()["running"] == 0

    # --- 3. the Prefect server restarts mid-run -------------------------------------------
    started = time.monotonic()
    refusals_before = fleet.ledger()["quota_refusals"]
    ids = fleet.submit(FAULT_RUNS)
    until_every_run_started(fleet, ids)
    until_sessions_running(fleet, QUOTA)
    downtime = fleet.restart_server()
    runs = fleet.wait_final(ids, PHASE_TIMEOUT)
    entries, peak, refusals = _check_no_loss(
        fleet, "Prefect server restarted mid-run", ids, runs, started, refusals_before,
        f"API down {downtime:.0f} s",
    )  # fmt: skip

    # --- 4. PostgreSQL away for 30 s mid-run ---------------------------------------------
    started = time.monotonic()
    refusals_before = fleet.ledger()["quota_refusals"]
    ids = fleet.submit(FAULT_RUNS)
    until_every_run_started(fleet, ids)
    until_sessions_running(fleet, QUOTA)
    assert fleet.pg is not None
    fleet.pg.stop("fast")
    time.sleep(PG_DOWN_SECONDS)
    fleet.pg.start()
    runs = fleet.wait_final(ids, PHASE_TIMEOUT)
    _check_no_loss(
        fleet, f"PostgreSQL stopped {PG_DOWN_SECONDS:.0f} s mid-run", ids, runs, started,
        refusals_before, "database back",
    )  # fmt: skip


def _check_no_loss(
    fleet: FleetStack,
    phase: str,
    ids: list[str],
    runs: list[dict[str, Any]],
    started: float,
    refusals_before: int,
    note: str,
) -> tuple[list[dict[str, Any]], int, int]:
    """Every run in the records and Completed with its summary; every session stopped."""
    summaries = len(fleet.slot_waits(ids))
    states = sorted(r["state"]["type"] for r in runs)
    entries, peak, refusals = record_phase(
        fleet, phase, ids, runs, started, refusals_before,
        f"{note}; {len(runs)}/{len(ids)} runs in the records, {summaries} summaries",
    )  # fmt: skip
    assert len(runs) == len(ids), "a run is missing from the records"
    assert states == ["COMPLETED"] * len(ids), states
    assert summaries == len(ids), "a run's summary artifact is missing"
    assert len(entries) == len(ids)
    assert all(e["end_reason"] == "stopped" for e in entries)
    assert peak <= QUOTA
    assert refusals == 0
    assert fleet.ledger()["running"] == 0
    return entries, peak, refusals
