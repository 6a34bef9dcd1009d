"""Chaos soak: hundreds of session lifecycles through ``rendering_session`` under random faults.

Run the full soak (300 lifecycles, 30 at a time, split between both API versions)::

    .venv/bin/python scripts/soak.py --lifecycles 300 --concurrency 30 --seed 1 --api-version both

It drives the emulator in-process (``httpx.ASGITransport``) on one shared
``VirtualClock(autojump=True)``, so hours of leases run in seconds and a seed replays the
same run. ``--loopback`` serves the emulator over real HTTP on 127.0.0.1 instead, on a
``ScaledClock`` (``--time-scale``, 60x by default), so dropped connections break real
sockets; it is bounded by ``--time-limit`` real seconds.

Each lifecycle is ``async with rendering_session(size, lease=..., report=SessionReport(),
client=...)`` around a job that sleeps some virtual minutes (often longer than the lease,
so the lease keeper renews it) and sometimes raises. Meanwhile the emulator injects, at a
few percent each: 429 with ``Retry-After``, 5xx, slow answers, dropped connections, create
answers lost after the session was made, sessions ending in Error; a background task
revokes every access token every few virtual minutes; and a Premium capacity limit makes
some creates end in Error for lack of capacity. Some lifecycles get a ready timeout shorter
than start-up, to exercise that path too.

Afterwards it prints a summary table and checks, exiting 1 if any check fails:

- no session is left running (``emu.running() == []``);
- every session in the emulator's ledger belongs to exactly one lifecycle: a retried or
  lost create left no duplicate behind;
- every lifecycle's reported outcome matches what the emulator saw (``ok`` and
  ``job-failed`` -> Stopped by the client after Ready; ``session-failed`` -> Error;
  ``ready-timeout`` -> Stopped before Ready; ``create-failed`` -> no session), and the
  ``SessionReport`` says who stopped it and its final status correctly.

One exception to "every ledger session belongs to a lifecycle" is inherent to v1 and is
reported rather than failed: a v1 create whose answer is lost *and* whose session is at
once refused for capacity leaves an Error session that bills nothing and that no list
can show, so the client cannot find it and posts again (``phantoms`` in the table).

``main(argv)`` is importable: ``tests/soak/test_soak.py`` runs a small soak in the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):
    # Run as a file (python scripts/soak.py): make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import Clock, ScaledClock, VirtualClock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.errors import (
    CreateOutcomeUnknownError,
    ReadyTimeoutError,
    SessionExpiredError,
    SessionFailedError,
    SessionStoppedError,
)
from arr_prefect.flows.session import SessionReport, rendering_session
from arr_prefect.models import ApiVersion, SessionSize
from arr_prefect.settings import ArrSettings, load_settings

__all__ = [
    "LifecyclePlan",
    "LifecycleResult",
    "SoakConfig",
    "SoakResult",
    "main",
    "no_ephemeral_prefect_server",
    "parse_args",
    "plan_lifecycles",
    "render_table",
    "run_soak",
    "verify",
]

API_VERSIONS: tuple[ApiVersion, ...] = ("v1", "2021-01-01")
Outcome = Literal[
    "ok",
    "job-failed",
    "session-failed",
    "ready-timeout",
    "session-expired",
    "session-stopped",
    "create-failed",
    "cancelled",
    "other",
]
OUTCOMES: tuple[Outcome, ...] = (
    "ok",
    "job-failed",
    "session-failed",
    "ready-timeout",
    "session-expired",
    "session-stopped",
    "create-failed",
    "cancelled",
    "other",
)
# What the emulator's ledger must show for a lifecycle that ended this way:
# (status, end_reason, reached Ready). None: anything.
EXPECTED_LEDGER: dict[Outcome, tuple[str, str, bool | None]] = {
    "ok": ("Stopped", "stopped", True),
    "job-failed": ("Stopped", "stopped", True),
    "session-failed": ("Error", "error", False),
    "ready-timeout": ("Stopped", "stopped", None),
    "session-expired": ("Expired", "expired", True),
    "session-stopped": ("Stopped", "stopped", None),
    "cancelled": ("Stopped", "stopped", None),
}

STARTUP_SECONDS = 90.0
"""Emulated start-up time of every session (virtual seconds)."""
LEASE = timedelta(minutes=10)
"""The rolling lease: the keeper renews it every 5 minutes while the job runs."""
TOKEN_EXPIRY_EVERY = 7 * 60.0
"""Every access token is revoked this often (virtual seconds): token expiry mid-run."""
SHORT_READY_TIMEOUT = 45.0
"""The ready timeout of the lifecycles meant to time out (start-up takes 90 s)."""

_QUIET_LOGGERS = ("arr_prefect", "arr", "flows", "tasks", "httpx")


class JobError(RuntimeError):
    """The soak's job failing on purpose."""


@dataclass(frozen=True)
class SoakConfig:
    """What to run: how many lifecycles, how many at once, through which API, how."""

    lifecycles: int = 300
    concurrency: int = 30
    seed: int = 1
    api_version: Literal["v1", "2021-01-01", "both"] = "both"
    loopback: bool = False
    time_scale: float = 60.0
    time_limit: float = 600.0
    verbose: bool = False


@dataclass(frozen=True)
class LifecyclePlan:
    """One lifecycle, drawn from the seed before the run starts."""

    index: int
    api_version: ApiVersion
    size: SessionSize
    job_seconds: float
    job_fails: bool
    ready_timeout: float | None


@dataclass
class LifecycleResult:
    """What one lifecycle reported: its session, outcome and what teardown did."""

    plan: LifecyclePlan
    outcome: Outcome
    report: SessionReport
    error: str | None = None
    error_type: str | None = None

    @property
    def session_id(self) -> str | None:
        return self.report.session_id


@dataclass
class SoakResult:
    """Everything the checks and the summary need."""

    config: SoakConfig
    results: list[LifecycleResult]
    ledger: list[dict[str, Any]]
    running: list[str]
    faults: Counter[str]
    tokens_revoked: int
    token_expiries: int
    wall_seconds: float
    virtual_seconds: float
    requests: dict[str, dict[str, int]] = field(default_factory=dict)


def plan_lifecycles(config: SoakConfig) -> list[LifecyclePlan]:
    """Draw every lifecycle from the seed: API version, size, job length, failure, timeout."""
    rng = random.Random(config.seed)
    plans = []
    for index in range(config.lifecycles):
        if config.api_version == "both":
            api_version = API_VERSIONS[index % 2]
        else:
            api_version = config.api_version
        # Jobs of 1-30 minutes: most outlive the 10-minute lease, so the keeper renews.
        plans.append(
            LifecyclePlan(
                index=index,
                api_version=api_version,
                size=SessionSize.PREMIUM if rng.random() < 0.2 else SessionSize.STANDARD,
                job_seconds=rng.uniform(60, 30 * 60),
                job_fails=rng.random() < 0.1,
                ready_timeout=SHORT_READY_TIMEOUT if rng.random() < 0.05 else None,
            )
        )
    return plans


def _settings(api_version: ApiVersion, base_url: str) -> ArrSettings:
    return load_settings(
        _env_file=None,
        account_id=DEFAULT_ACCOUNT_ID,
        account_key=DEFAULT_ACCOUNT_KEY,
        service_url=base_url,
        sts_url=base_url,
        api_version=api_version,
        max_attempts=6,
        backoff_initial=1.0,
        backoff_max=30.0,
        poll_interval=5.0,
        ready_timeout=900.0,
    )


def _classify(exc: BaseException) -> Outcome:
    # Order matters: ReadyTimeoutError is a SessionEndedError too.
    if isinstance(exc, JobError):
        return "job-failed"
    if isinstance(exc, ReadyTimeoutError):
        return "ready-timeout"
    if isinstance(exc, SessionFailedError):
        return "session-failed"
    if isinstance(exc, SessionExpiredError):
        return "session-expired"
    if isinstance(exc, SessionStoppedError):
        return "session-stopped"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "other"


async def _lifecycle(
    plan: LifecyclePlan, client: ArrClient, clock: Clock, gate: asyncio.Semaphore
) -> LifecycleResult:
    report = SessionReport()
    async with gate:
        try:
            async with rendering_session(
                plan.size,
                lease=LEASE,
                ready_timeout=plan.ready_timeout,
                report=report,
                client=client,
            ):
                await clock.sleep(plan.job_seconds)
                if plan.job_fails:
                    raise JobError(f"lifecycle {plan.index}: the job failed on purpose")
        # Every way a lifecycle can end is an outcome to classify and check, not a crash.
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            outcome = _classify(exc)
            if report.session_id is None and outcome in ("other", "cancelled"):
                # Nothing was created (or nothing could be learnt about it).
                outcome = "create-failed" if outcome == "other" else outcome
            if isinstance(exc, CreateOutcomeUnknownError):
                outcome = "create-failed"
            return LifecycleResult(plan, outcome, report, str(exc), type(exc).__name__)
    return LifecycleResult(plan, "ok", report)


async def _expire_tokens_forever(emu: Emulator, clock: Clock, counter: list[int]) -> None:
    while True:
        await clock.sleep(TOKEN_EXPIRY_EVERY)
        counter[0] += 1
        counter[1] += emu.expire_tokens()


async def _run(config: SoakConfig, emu: Emulator, clock: Clock, base_url: str) -> SoakResult:
    plans = plan_lifecycles(config)
    transport_rng = random.Random(config.seed + 1)
    clients: dict[ApiVersion, ArrClient] = {}
    cache = TokenCache()
    for version in API_VERSIONS:
        clients[version] = ArrClient(
            _settings(version, base_url),
            transport=None if config.loopback else emu.transport(),
            clock=clock,
            token_cache=cache,
            rng=random.Random(transport_rng.random()),
        )
    gate = asyncio.Semaphore(config.concurrency)
    counter = [0, 0]
    started_wall, started_virtual = time.monotonic(), clock.time()
    expiry = asyncio.create_task(_expire_tokens_forever(emu, clock, counter))
    tasks = [
        asyncio.create_task(_lifecycle(plan, clients[plan.api_version], clock, gate))
        for plan in plans
    ]
    try:
        _, pending = await asyncio.wait(tasks, timeout=config.time_limit)
        for task in pending:
            task.cancel()
        results = list(await asyncio.gather(*tasks))
    finally:
        expiry.cancel()
        await asyncio.gather(expiry, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
    return SoakResult(
        config=config,
        results=results,
        ledger=emu.ledger()["sessions"],
        running=[record.id for record in emu.running()],
        faults=Counter(applied.action.kind for applied in emu.faults.applied),
        tokens_revoked=counter[1],
        token_expiries=counter[0],
        wall_seconds=time.monotonic() - started_wall,
        virtual_seconds=clock.time() - started_virtual,
        requests=emu.request_counts(),
    )


def _emulator(config: SoakConfig, clock: Clock) -> Emulator:
    emu = Emulator(
        clock=clock,
        startup_seconds=STARTUP_SECONDS,
        # Premium is scarce: with about a fifth of the lifecycles Premium, some creates find
        # no free VM and end in Error, as in a busy region.
        capacity={"premium": max(1, config.concurrency // 10)},
        seed=config.seed,
    )
    emu.faults.set_random(
        p_throttle=0.03,
        p_server_error=0.03,
        p_slow=0.03,
        p_drop=0.02,
        p_lost_create=0.05,
        p_session_error=0.04,
        retry_after=2,
        slow_seconds=8.0,
        seed=config.seed,
    )
    return emu


@contextmanager
def no_ephemeral_prefect_server() -> Iterator[None]:
    """Emit no Prefect events when no Prefect API is configured, instead of starting one.

    ``rendering_session`` emits ``arr.session.*`` events. With no Prefect API configured,
    Prefect would start a temporary server just to receive them (seconds of start-up, and
    noise); a placeholder API key is what tells Prefect there is no ephemeral server to
    emit to (``should_emit_events_to_ephemeral_server``), so ``emit_event`` returns at once.
    Under a configured API (the test harness) events are emitted as usual.
    """
    with ExitStack() as stack:
        if PREFECT_API_URL.value() is None:
            stack.enter_context(temporary_settings({PREFECT_API_KEY: "soak-emits-no-events"}))
        yield


@contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """The chaos' warnings (retries, lost answers) only with --verbose."""
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    if not verbose:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def run_soak(config: SoakConfig) -> SoakResult:
    """Run every lifecycle against a fresh emulator and collect what happened."""
    with no_ephemeral_prefect_server(), _quiet(config.verbose), ExitStack() as stack:
        if config.loopback:
            clock: Clock = ScaledClock(config.time_scale)
            emu = _emulator(config, clock)
            base_url = stack.enter_context(emu.serve())
        else:
            clock = VirtualClock(autojump=True)
            emu = _emulator(config, clock)
            base_url = "http://127.0.0.1:9"  # never dialled: the ASGI transport answers
        return asyncio.run(_run(config, emu, clock, base_url))


def _is_phantom(entry: dict[str, Any]) -> bool:
    """A v1 session refused for capacity at once: it never ran, billed nothing, was never
    listable, so a client whose create answer was lost cannot know it existed."""
    return bool(
        entry["api_version"] == "v1"
        and entry["status"] == "Error"
        and entry["error_code"] == "InsufficientCapacity"
        and entry["billed_seconds"] == 0
    )


def verify(result: SoakResult) -> list[str]:
    """Every check that failed, as readable lines (empty: the soak passed)."""
    problems: list[str] = []
    if result.running:
        problems.append(f"sessions left running: {sorted(result.running)}")
    ledger = {entry["id"]: entry for entry in result.ledger}
    owners: dict[str, list[int]] = {}
    for item in result.results:
        if item.session_id is not None:
            owners.setdefault(item.session_id, []).append(item.plan.index)
    for session_id, indexes in owners.items():
        if len(indexes) > 1:
            problems.append(f"session {session_id} reported by lifecycles {indexes}")
    for session_id, entry in ledger.items():
        if session_id not in owners and not _is_phantom(entry):
            problems.append(
                f"session {session_id} ({entry['api_version']}, {entry['status']},"
                f" billed {entry['billed_seconds']:.0f}s) belongs to no lifecycle:"
                " a duplicate or leak"
            )
    for item in result.results:
        problems.extend(_check_lifecycle(item, ledger))
    return problems


def _check_lifecycle(item: LifecycleResult, ledger: dict[str, dict[str, Any]]) -> list[str]:
    label = f"lifecycle {item.plan.index} ({item.plan.api_version}, {item.outcome})"
    report = item.report
    if item.outcome == "other":
        return [f"{label}: unexpected {item.error_type}: {item.error}"]
    if item.outcome == "create-failed":
        if item.session_id is not None:
            return [f"{label}: reports session {item.session_id} but says create failed"]
        return []
    if item.session_id is None:
        return [f"{label}: no session id reported"]
    entry = ledger.get(item.session_id)
    if entry is None:
        return [f"{label}: session {item.session_id} is not in the emulator's ledger"]
    problems = []
    status, reason, reached_ready = EXPECTED_LEDGER[item.outcome]
    seen = (entry["status"], entry["end_reason"])
    if seen != (status, reason):
        problems.append(f"{label}: the emulator saw {seen}, expected {(status, reason)}")
    if reached_ready is not None and (entry["ready_at"] is not None) != reached_ready:
        problems.append(f"{label}: ready_at={entry['ready_at']} contradicts the outcome")
    if report.stop_error is not None:
        problems.append(f"{label}: teardown could not stop it: {report.stop_error}")
    if report.stopped_by != "finally":
        problems.append(f"{label}: teardown did not stop it (stopped_by={report.stopped_by})")
    if report.final_status is not None and report.final_status != entry["status"]:
        problems.append(
            f"{label}: reported final status {report.final_status}, the emulator saw"
            f" {entry['status']}"
        )
    if item.outcome in ("ok", "job-failed") and report.ready_at is None:
        problems.append(f"{label}: the job ran but the report has no ready time")
    return problems


def _row(name: str, values: Sequence[object]) -> str:
    return f"{name:<34}" + "".join(f"{value!s:>12}" for value in values)


def render_table(result: SoakResult, problems: Sequence[str]) -> str:
    """The summary: one column per API version and a total."""
    versions = [v for v in API_VERSIONS if any(r.plan.api_version == v for r in result.results)]
    columns: list[str | None] = [*versions, None]

    def lifecycles(version: str | None) -> list[LifecycleResult]:
        return [r for r in result.results if version is None or r.plan.api_version == version]

    def ledger(version: str | None) -> list[dict[str, Any]]:
        return [e for e in result.ledger if version is None or e["api_version"] == version]

    owned = {r.session_id for r in result.results if r.session_id is not None}
    lines = [
        _row("", [*versions, "total"]),
        _row("lifecycles", [len(lifecycles(c)) for c in columns]),
    ]
    for outcome in OUTCOMES:
        counts = [sum(1 for r in lifecycles(c) if r.outcome == outcome) for c in columns]
        if counts[-1]:
            lines.append(_row(f"  outcome {outcome}", counts))
    lines += [
        _row(
            "lease renewals", [sum(r.report.lease_renewals for r in lifecycles(c)) for c in columns]
        ),
        _row("sessions in the ledger", [len(ledger(c)) for c in columns]),
        _row(
            "  ended Stopped / Error / Expired",
            [
                "/".join(
                    str(sum(1 for e in ledger(c) if e["status"] == s))
                    for s in ("Stopped", "Error", "Expired")
                )
                for c in columns
            ],
        ),
        _row(
            "duplicates / leaks (unowned)",
            [
                sum(1 for e in ledger(c) if e["id"] not in owned and not _is_phantom(e))
                for c in columns
            ],
        ),
        _row(
            "phantoms (v1 lost+no capacity)",
            [sum(1 for e in ledger(c) if e["id"] not in owned and _is_phantom(e)) for c in columns],
        ),
        _row(
            "left running",
            [sum(1 for e in ledger(c) if e["id"] in result.running) for c in columns],
        ),
        _row(
            "billed minutes",
            [f"{sum(e['billed_seconds'] for e in ledger(c)) / 60:.0f}" for c in columns],
        ),
    ]
    no_capacity = sum(1 for e in result.ledger if e["error_code"] == "InsufficientCapacity")
    faults = dict(result.faults)
    faults["no_capacity"] = no_capacity
    pad = [""] * len(versions)  # totals-only rows leave the per-version columns empty
    lines.append("faults applied (all versions)")
    for kind in sorted(faults):
        lines.append(_row(f"  {kind}", [*pad, faults[kind]]))
    lines.append(
        _row(
            "  token expiries (tokens revoked)",
            [*pad, f"{result.token_expiries} ({result.tokens_revoked})"],
        )
    )
    requests = sum(
        count
        for route, statuses in result.requests.items()
        if not route.startswith("admin.")
        for count in statuses.values()
    )
    lines += [
        _row("requests", [*pad, requests]),
        _row("virtual hours", [*pad, f"{result.virtual_seconds / 3600:.1f}"]),
        _row("wall seconds", [*pad, f"{result.wall_seconds:.1f}"]),
        _row("checks", [*pad, "PASS" if not problems else "FAIL"]),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> SoakConfig:
    """The command line, as a :class:`SoakConfig`."""
    parser = argparse.ArgumentParser(
        prog="soak.py",
        description="Chaos soak of rendering_session against the ARR emulator.",
    )
    parser.add_argument("--lifecycles", type=int, default=300, help="how many (default 300)")
    parser.add_argument("--concurrency", type=int, default=30, help="at once (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of plans and faults")
    parser.add_argument(
        "--api-version",
        choices=["v1", "2021-01-01", "both"],
        default="both",
        help="API version of the lifecycles (both: alternate; default)",
    )
    parser.add_argument(
        "--loopback",
        action="store_true",
        help="serve the emulator over real HTTP on 127.0.0.1, on a scaled real-time clock",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=60.0,
        help="--loopback: emulated seconds per real second (default 60)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="cancel lifecycles still running after this many real seconds (default 600)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the client's warnings")
    args = parser.parse_args(argv)
    if args.lifecycles < 1 or args.concurrency < 1:
        parser.error("--lifecycles and --concurrency must be at least 1")
    if args.time_scale <= 0 or args.time_limit <= 0:
        parser.error("--time-scale and --time-limit must be positive")
    return SoakConfig(
        lifecycles=args.lifecycles,
        concurrency=args.concurrency,
        seed=args.seed,
        api_version=args.api_version,
        loopback=args.loopback,
        time_scale=args.time_scale,
        time_limit=args.time_limit,
        verbose=args.verbose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print the summary table and any failed check; 0 if all passed."""
    config = parse_args(argv)
    result = run_soak(config)
    problems = verify(result)
    mode = f"loopback, {config.time_scale:g}x" if config.loopback else "in-process, virtual clock"
    print(
        f"soak: {config.lifecycles} lifecycles, concurrency {config.concurrency},"
        f" seed {config.seed}, api {config.api_version} ({mode})"
    )
    print(render_table(result, problems))
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
