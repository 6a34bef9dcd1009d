"""The fleet stack: a Prefect server on PostgreSQL, three wheel-only workers, an emulator
enforcing the account quota, and the measurements the fleet table shows.

Built on :class:`tests.e2e._stack.Stack` (same processes, environments and teardown); what
changes is the server's database (a PostgreSQL the test starts, ``_postgres.py``), where
the server keeps concurrency leases (on disk, so a restart keeps them), a fixed API port
(so the server can be restarted under the workers) and ``arr-emulator --max-sessions``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]  # Prefect's dependency, no stubs

from arr_prefect.emulator import DEFAULT_ACCOUNT_ID
from tests.e2e._postgres import Postgres
from tests.e2e._stack import (
    REPO_ROOT,
    TIME_SCALE,
    Stack,
    StackError,
    free_port,
    parse_time,
    tail,
    wait_for,
)

QUOTA = 3
"""The account's session quota: the emulator's --max-sessions and the Prefect limit."""
LIMIT_NAME = f"arr-sessions-{DEFAULT_ACCOUNT_ID}"
SLOT_LEASE_SECONDS = 60.0
"""ARR_SESSION_SLOT_LEASE_SECONDS (the default): the Prefect slot lease, real seconds."""
REPOSSESSOR_LOOP_SECONDS = 15.0
"""The server's repossessor loop (Prefect's default, set explicitly on the server)."""
SLOT_WAIT_SECONDS = 5.0
"""The server's longest Retry-After for a full limit (default 30 s): waiting runs ask
again at most this long after a slot frees."""
LEASE_MINUTES = 90.0
"""The runs' rolling ARR lease, emulated: 5400 s = 270 real seconds at x20. It must outlast
the faults in emulated time: a 30 s outage is 10 emulated minutes, and a run blocked on
the Prefect API between create and Ready (its task states cannot be recorded) starts its
lease keeper only once the API answers (with 5 minutes, sessions expired during the server
restart). And the lost host's sessions must be stopped by the reaper before it ends them:
heartbeats stop, the zombie automation's window passes, the run is marked Crashed, and the
trigger's reaper runs a minute later (about 150 real seconds, 3000 emulated)."""
ZOMBIE_FILE = REPO_ROOT / "automations" / "flow-run-heartbeats-stopped.yaml"
HEARTBEAT_SECONDS = 30
"""PREFECT_FLOWS_HEARTBEAT_FREQUENCY on the workers (their flow runs inherit it): what
*Running a fleet* recommends with the zombie automation, Prefect's minimum."""
ZOMBIE_WINDOW = 90
"""The zombie automation's ``within`` for 30 s heartbeats (Prefect's docs' value)."""
QUOTA_WAIT_SECONDS = 200 * TIME_SCALE
"""ARR_QUOTA_WAIT on the workers, in the client's (emulated) seconds: 200 real seconds, 4000
emulated at x20. A survivor that takes a lost host's slot when it comes back (75 s after the
kill) is refused by the service until the reaper stops that host's sessions (about 150 s
after the kill): about 75 real seconds, 1500 emulated, more than the default 10 minutes of
emulated time (30 real seconds at x20); in real time the default covers it. It stays under
the flow's create shield (``CREATE_SHIELD_SECONDS``, 300 real seconds)."""
JOB = {"frames": 4, "seconds_per_frame": 60}
"""The sample job: 240 emulated seconds, 12 real seconds at x20."""
FLEET_RETRY_EXTRA_CODES = "500"
"""PREFECT_CLIENT_RETRY_EXTRA_CODES on the workers (their flow runs inherit it). Without
it a run starting while PostgreSQL was away got a 500 on its Running proposal, exited,
the worker's Crashed proposal got one too, and the run stayed Pending forever (seen once
in the PostgreSQL phase); Prefect's client retries 5 times over about 60 s."""


@dataclass
class FleetStack(Stack):
    """The e2e stack with its server on PostgreSQL and several workers."""

    pg: Postgres | None = None
    server_port: int = 0
    workers: list[str] = field(default_factory=list)

    @property
    def lease_dir(self) -> Any:
        return self.workdir / "prefect-home" / "concurrency_leases"

    def start_server(self, port: int = 0, settings: Mapping[str, str] | None = None) -> None:
        """``prefect server start`` on PostgreSQL, leases on disk, on a port kept across
        restarts."""
        assert self.pg is not None
        self.server_port = port or self.server_port or free_port()
        fleet_settings = {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.pg.url,
            # Leases on disk: a restarted server still knows who holds which slot.
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
                "prefect.server.concurrency.lease_storage.filesystem"
            ),
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": f"{REPOSSESSOR_LOOP_SECONDS:g}",
            "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": (
                f"{SLOT_WAIT_SECONDS:g}"
            ),
        }
        super().start_server(self.server_port, {**fleet_settings, **(settings or {})})

    def restart_server(self) -> float:
        """Stop the server (SIGTERM, as a restart does) and start it again on the same
        port; return the real seconds the API was down."""
        down = time.monotonic()
        self.processes["server"].stop()
        self.start_server()
        self.wait_for_server()
        return time.monotonic() - down

    def create_limit(self) -> None:
        """What the README tells an operator to run once per account."""
        self._run_cli(
            [
                str(self.ensure_venv().bin_dir / "prefect"),
                "global-concurrency-limit",
                "create",
                LIMIT_NAME,
                "--limit",
                str(QUOTA),
            ],
            cwd=self.workdir,
            what="prefect global-concurrency-limit create",
            env=self.user_env,
        )

    @property
    def worker_env(self) -> dict[str, str]:
        """A fleet worker's environment, as *Running a fleet* in the README sets it: Prefect's
        client also retries a 500, what the server answers while its database is away."""
        env = super().worker_env
        env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] = FLEET_RETRY_EXTRA_CODES
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
        env["ARR_QUOTA_WAIT"] = f"{QUOTA_WAIT_SECONDS:g}"
        return env

    def create_zombie_automation(self) -> str:
        """``prefect automation create --from-file automations/flow-run-heartbeats-stopped
        .yaml`` (the README's way), its window set for the workers' 30 s heartbeats; the
        automation's name."""
        spec = yaml.safe_load(ZOMBIE_FILE.read_text())
        spec["trigger"]["within"] = ZOMBIE_WINDOW
        path = self.workdir / "zombie-automation.yaml"
        path.write_text(yaml.safe_dump(spec))
        self._run_cli(
            [str(self.ensure_venv().bin_dir / "prefect"), "automation", "create", "--from-file",
             str(path)],
            cwd=self.workdir,
            what="prefect automation create",
            env=self.user_env,
        )  # fmt: skip
        return str(spec["name"])

    def delete_automation(self, name: str) -> None:
        for automation in self.api("POST", "/automations/filter", json={}):
            if automation["name"] == name:
                self.api("DELETE", f"/automations/{automation['id']}")

    def add_worker(self) -> str:
        self.start_worker()
        self.wait_for_worker()
        name = self.processes["worker"].name
        self.workers.append(name)
        return name

    # --- the API, patient with a restarting server ----------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json() if response.content else None
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{method} {path} kept failing")
            time.sleep(0.5)

    def submit(self, count: int) -> list[str]:
        """``count`` render-batch runs at once; their ids."""
        deployment = self.api("GET", "/deployments/name/render-batch/render-batch")
        parameters = {"job_parameters": JOB, "lease_minutes": LEASE_MINUTES}
        return [
            str(
                self.api(
                    "POST",
                    f"/deployments/{deployment['id']}/create_flow_run",
                    json={"parameters": parameters},
                )["id"]
            )
            for _ in range(count)
        ]

    def runs(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "POST", "/flow_runs/filter", json={"flow_runs": {"id": {"any_": list(ids)}}}
        )
        return found

    def wait_final(self, ids: list[str], timeout: float) -> list[dict[str, Any]]:
        def done() -> list[dict[str, Any]] | None:
            runs = self.runs(ids)
            final = [r for r in runs if r["state"] and r["state"]["type"] in FINAL_TYPES]
            return runs if len(final) == len(ids) else None

        def describe() -> str:
            states = sorted(str((r["state"] or {}).get("name")) for r in self.runs(ids))
            return f"states {states}; worker logs:\n" + "\n".join(
                tail(self.processes[w].log, 10) for w in self.workers if w in self.processes
            )

        return wait_for(
            done, timeout=timeout, what=f"{len(ids)} runs to finish", describe=describe, step=1.0
        )

    def sessions_of(self, ids: Iterable[str]) -> dict[str, list[str]]:
        """Each run's sessions, from its ``arr-session:`` tags."""
        return {
            str(r["id"]): [t.split(":", 1)[1] for t in r["tags"] if t.startswith("arr-session:")]
            for r in self.runs(ids)
        }

    def slot_waits(self, ids: Iterable[str]) -> list[float]:
        """Each run's wait for a slot, from the "Waited for a session slot" row of its
        render-batch summary artifact (seconds)."""
        artifacts = self.api(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"key": {"any_": ["render-batch-summary"]}},
                "flow_runs": {"id": {"any_": list(ids)}},
            },
        )
        waits = []
        for artifact in artifacts:
            for line in str(artifact.get("data") or "").splitlines():
                if line.startswith("| Waited for a session slot |"):
                    seconds = duration_seconds(line.split("|")[2])
                    if seconds is not None:
                        waits.append(seconds)
        return waits

    def create_waits(self, ids: Iterable[str]) -> list[float]:
        """Each finished ``create-session`` task run's time, in real seconds: a create
        answers in milliseconds unless the service refused it for the account's quota and
        the client waited for a session to end (``ARR_QUOTA_WAIT``)."""
        task_runs = self.api(
            "POST",
            "/task_runs/filter",
            json={
                "flow_runs": {"id": {"any_": list(ids)}},
                "task_runs": {"name": {"like_": "create-session"}},
            },
        )
        return [
            parse_time(run["end_time"]) - parse_time(run["start_time"])
            for run in task_runs
            if run.get("start_time") and run.get("end_time")
        ]

    def quota_wait_lines(self) -> list[str]:
        """The client's "account at its session quota" log lines in every worker's log
        (a process worker shows its flow runs' output)."""
        logs = {p.log for p in self.processes.values() if p.name.startswith("worker-")}
        return [
            line
            for log in sorted(logs)
            if log.exists()
            for line in log.read_text(errors="replace").splitlines()
            if QUOTA_WAIT_LOG in line
        ]

    def held_leases(self) -> dict[str, str]:
        """The server's concurrency leases on disk: lease id -> holder (flow run id)."""
        leases = {}
        for path in self.lease_dir.glob("*.json"):
            if path.name == "expirations.json":
                continue
            try:
                lease = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            holder = ((lease.get("metadata") or {}).get("holder") or {}).get("id")
            leases[str(lease.get("id"))] = str(holder)
        return leases


FINAL_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
QUOTA_WAIT_LOG = "account at its session quota (403 QuotaExceeded); trying again in"


def parent_pid(pid: int) -> int | None:
    """The parent of a local process (Linux /proc), or None when it is gone."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one read
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def session_guards_of(pid: int) -> list[int]:
    """The session guard processes a flow-run process started (its ``arr_prefect.guard``
    children)."""
    guards = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"arr_prefect.guard" in cmdline:
            guards.append(int(entry.name))
    return guards


def sigkill(pid: int) -> None:
    """SIGKILL a process and, if it leads one, its process group."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


_DURATION = re.compile(r"(?:(\d+) h)? ?(?:(\d+) min)? ?(?:(\d+(?:\.\d+)?) s)?")


def duration_seconds(text: str) -> float | None:
    """Seconds in a duration as the summary prints it (``45 s``, ``1 min 5 s``, ``2 h``),
    None for anything else (``-``)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def run_pid(run: Mapping[str, Any]) -> int | None:
    pid = str(run.get("infrastructure_pid") or "").rsplit(":", 1)[-1]
    return int(pid) if pid.isdigit() else None


def peak_concurrency(entries: Iterable[Mapping[str, Any]], now: float) -> int:
    """Most sessions Starting or Ready at once, from the ledger's created/ended times."""
    events: list[tuple[float, int]] = []
    for entry in entries:
        start = parse_time(entry["created_at"])
        end = parse_time(entry["ended_at"]) if entry["ended_at"] else now
        events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts
        running += delta
        peak = max(peak, running)
    return peak


@dataclass
class FleetRow:
    """One line of the fleet table."""

    phase: str
    runs: str
    peak: int
    refusals: int
    wait_total: float
    wait_max: float
    billed_minutes: int
    seconds: float
    note: str
    quota_wait_total: float = 0.0
    quota_wait_max: float = 0.0


rows: list[FleetRow] = []
timings: list[str] = []


def billed_minutes(entries: Iterable[Mapping[str, Any]]) -> int:
    """Billed minutes of these sessions (each rounded up, as the service bills)."""
    return sum(max(1, math.ceil(e["billed_seconds"] / 60 - 1e-9)) for e in entries)


def render_table() -> str:
    header = (
        "phase",
        "runs completed",
        "max sessions at once",
        "quota refusals",
        "slot wait total / longest",
        "quota wait total / longest",
        "billed min (emulated)",
        "phase time",
        "what happened",
    )
    body = [
        (
            r.phase,
            r.runs,
            f"{r.peak} (quota {QUOTA})",
            str(r.refusals),
            f"{r.wait_total:.0f} s / {r.wait_max:.0f} s",
            f"{r.quota_wait_total:.0f} s / {r.quota_wait_max:.0f} s",
            str(r.billed_minutes),
            f"{r.seconds:.0f} s",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(c) for c in column) for column in zip(header, *body, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    title = (
        f"Fleet: Prefect server on PostgreSQL, 3 wheel-only process workers, quota {QUOTA}"
        f" (arr-emulator --max-sessions {QUOTA} and the Prefect limit {LIMIT_NAME});"
        f" emulated time x{TIME_SCALE:g}, ARR rolling lease {LEASE_MINUTES:g} min emulated,"
        f" slot lease {SLOT_LEASE_SECONDS:.0f} s real; waits and phase times are real seconds"
    )
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, line(header), rule, *(line(r) for r in body)])
