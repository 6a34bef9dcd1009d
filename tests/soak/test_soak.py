"""The chaos soak, small: lifecycles under random faults leave nothing running or unowned.

The full soak is ``python scripts/soak.py`` (300 lifecycles); this runs the same script's
``run_soak``/``verify``/``main`` on fewer lifecycles, in-process on a virtual clock.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.errors import SessionFailedError
from arr_prefect.flows.session import SessionReport, rendering_session
from tests.flows.conftest import make_settings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def _load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arr_soak_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


@pytest.fixture(scope="module")
def small_soak() -> Any:
    """40 lifecycles, 10 at a time, both API versions, seed 1."""
    config = soak.SoakConfig(lifecycles=40, concurrency=10, seed=1, api_version="both")
    return soak.run_soak(config)


def test_small_soak_passes_every_check(small_soak: Any) -> None:
    """No failed check: nothing running, nothing unowned, every outcome as the ledger saw."""
    assert soak.verify(small_soak) == []


def test_small_soak_leaves_nothing_running(small_soak: Any) -> None:
    """Every session the soak made has ended when the soak is over."""
    assert small_soak.running == []
    assert all(entry["status"] in ("Stopped", "Error") for entry in small_soak.ledger)


def test_small_soak_had_chaos(small_soak: Any) -> None:
    """The run met every kind of trouble it claims to: faults, token expiry, both APIs."""
    assert {"throttle", "server_error", "slow", "drop", "lost_create"} <= set(small_soak.faults)
    assert small_soak.token_expiries > 0
    assert {r.plan.api_version for r in small_soak.results} == {"v1", "2021-01-01"}
    outcomes = {r.outcome for r in small_soak.results}
    assert {"ok", "session-failed", "ready-timeout"} <= outcomes
    assert sum(r.report.lease_renewals for r in small_soak.results) > 0


def test_every_lifecycle_owns_its_ledger_session(small_soak: Any) -> None:
    """Each reported session id is in the ledger once, and each ledger session is reported."""
    reported = [r.session_id for r in small_soak.results if r.session_id is not None]
    assert len(reported) == len(set(reported))
    unowned = [e for e in small_soak.ledger if e["id"] not in set(reported)]
    assert all(soak._is_phantom(e) for e in unowned), unowned


def test_verify_catches_a_leak_and_a_misreport(small_soak: Any) -> None:
    """The checker itself fails on a running unowned session and on a wrong outcome."""
    leaked = {**small_soak.ledger[0], "id": "leaked-1", "status": "Ready", "end_reason": None}
    first_ok = next(r for r in small_soak.results if r.outcome == "ok")
    misreported = soak.LifecycleResult(first_ok.plan, "session-failed", first_ok.report)
    broken = soak.SoakResult(
        **{
            **small_soak.__dict__,
            "ledger": [*small_soak.ledger, leaked],
            "running": ["leaked-1"],
            "results": [misreported, *small_soak.results[1:]],
        }
    )
    problems = "\n".join(soak.verify(broken))
    assert "sessions left running: ['leaked-1']" in problems
    assert "session leaked-1 (" in problems
    assert "belongs to no lifecycle" in problems
    assert f"lifecycle {first_ok.plan.index} (" in problems


def test_main_prints_the_summary_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """The command prints its table and exits 0 when every check passes."""
    assert soak.main(["--lifecycles", "12", "--concurrency", "6", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for row in (
        "lifecycles",
        "duplicates / leaks",
        "left running",
        "billed minutes",
        "wall seconds",
    ):
        assert row in out
    assert out.rstrip().endswith("PASS")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--lifecycles", "0"], id="no-lifecycles"),
        pytest.param(["--api-version", "v2"], id="unknown-api-version"),
        pytest.param(["--time-scale", "0"], id="zero-time-scale"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    """Nonsense on the command line is an argparse error (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        soak.parse_args(argv)
    assert info.value.code == 2


async def test_2021_lost_create_of_a_session_refused_for_capacity_is_adopted() -> None:
    """A lost PUT whose session ends at once in Error is reported as session-failed, owned."""
    clock = VirtualClock(autojump=True)
    emu = Emulator(clock=clock, startup_seconds=60, capacity={"standard": 0}, seed=1)
    emu.faults.add("lost_create", "v2021.create")
    report = SessionReport()
    client = ArrClient(
        make_settings("2021-01-01"),
        transport=emu.transport(),
        clock=clock,
        token_cache=TokenCache(),
    )
    async with client:
        with (
            soak.no_ephemeral_prefect_server(),
            pytest.raises(SessionFailedError, match="No capacity"),
        ):
            async with rendering_session(lease=timedelta(minutes=10), report=report, client=client):
                pytest.fail("the body must not run")
    [entry] = emu.ledger()["sessions"]
    assert report.session_id == entry["id"]
    assert entry["status"] == "Error"
    assert emu.running() == []
