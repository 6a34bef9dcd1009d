"""Durations read the same whether shown from the exact time or from the figure kept."""

from __future__ import annotations

import pytest

from arr_prefect.units import format_duration, format_lease, round_seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(455.49, "7 min 36 s", id="tenth-rounds-up-to-a-half"),
        pytest.param(455.44, "7 min 35 s", id="below-the-half"),
        pytest.param(90.5, "1 min 31 s", id="a-half-goes-up"),
        pytest.param(59.96, "1 min", id="to-the-minute"),
        pytest.param(9.96, "10 s", id="the-tenth-reaches-ten"),
        pytest.param(4.25, "4.2 s", id="below-ten-one-decimal"),
    ],
)
def test_a_duration_reads_the_same_from_its_kept_figure(seconds: float, text: str) -> None:
    """The stop's log line formats the exact run time, the summary its one-decimal figure:
    both must say the same (the demo once logged 7 min 35 s and summarised 7 min 36 s)."""
    assert format_duration(seconds) == text
    assert format_duration(round_seconds(seconds)) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(600.723456, "10 min", id="v1-fingerprint-is-not-time"),
        pytest.param(600.0, "10 min", id="whole"),
        pytest.param(5.9, "5 s", id="under-ten-whole-seconds"),
        pytest.param(None, "-", id="unknown"),
    ],
)
def test_a_lease_reads_in_whole_seconds(seconds: float | None, text: str) -> None:
    """A v1 lease of 10 min carries a sub-second fingerprint; the create log said
    ``lease 10 min 1 s`` for it."""
    assert format_lease(seconds) == text
