"""The fleet test reads the slot waits back from render-batch's summary: its parser must
read every duration the summary prints (a wait of 65 s is "1 min 5 s")."""

from __future__ import annotations

import pytest

from arr_prefect.units import format_duration
from tests.e2e._fleet import duration_seconds


@pytest.mark.parametrize("seconds", [0.0, 0.4, 9.9, 10, 45, 60, 65, 599, 3600, 3660, 7200])
def test_every_printed_duration_reads_back(seconds: float) -> None:
    printed = format_duration(seconds)
    assert duration_seconds(printed) == pytest.approx(seconds, abs=0.05), printed


@pytest.mark.parametrize("text", ["-", "", "soon", "5 days"])
def test_anything_else_is_no_duration(text: str) -> None:
    assert duration_seconds(text) is None
