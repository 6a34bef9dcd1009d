"""Fixtures shared by every test directory.

The Prefect test harness is session-scoped (one temporary server for the whole run) and
only started by tests that ask for it (``prefect_server``), so unit tests stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Set before Prefect is imported anywhere: no telemetry calls from a machine without DNS.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True)
def _no_arr_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's ARR_* variables leak into a test."""
    for name in list(os.environ):
        if name.startswith("ARR_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow test of the run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
