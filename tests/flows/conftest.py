"""Flow tests: the emulator in-process on a virtual clock, behind the tasks' client factory.

Every test ends by checking the emulator's ledger: no session may be left running.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient, use_client_factory
from arr_prefect.clock import VirtualClock, use_clock
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.settings import ArrSettings, load_settings


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every flow test runs against the session's Prefect test server."""


@pytest.fixture(params=["v1", "2021-01-01"])
def api_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> VirtualClock:
    """Virtual time that jumps ahead whenever every task is waiting on it.

    Tests marked ``realtime_job`` run work that takes real time (a subprocess, a blocked
    job); the clock then stands still, so the lease keeper cannot race hours ahead while
    the job runs, and sessions start instantly.
    """
    return VirtualClock(autojump=request.node.get_closest_marker("realtime_job") is None)


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[Emulator]:
    # Unseeded: session IDs must differ across tests, which share one Prefect database.
    emu = Emulator(clock=clock, startup_seconds=60 if clock.autojump else 0)
    yield emu
    leaked = [(s.id, s.status) for s in emu.running()]
    assert leaked == [], f"sessions left running: {leaked}"


def make_settings(api_version: str, **overrides: Any) -> ArrSettings:
    return load_settings(
        _env_file=None,
        account_id=DEFAULT_ACCOUNT_ID,
        account_key=DEFAULT_ACCOUNT_KEY,
        service_url="http://127.0.0.1:9",
        sts_url="http://127.0.0.1:9",
        api_version=api_version,
        **overrides,
    )


@pytest.fixture
def settings(api_version: str) -> ArrSettings:
    return make_settings(api_version)


@pytest.fixture
def arr(emulator: Emulator, clock: VirtualClock, settings: ArrSettings) -> Iterator[None]:
    """Point every task and flow at the in-process emulator, on the virtual clock."""
    cache = TokenCache()

    def factory(chosen: ArrSettings | None = None) -> ArrClient:
        return ArrClient(
            chosen or settings, transport=emulator.transport(), clock=clock, token_cache=cache
        )

    with use_clock(clock), use_client_factory(factory):
        yield
