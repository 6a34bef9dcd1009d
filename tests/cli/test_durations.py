"""Durations as operators type them, and as `arr` prints them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from arr_prefect.cli.durations import format_duration, parse_duration
from arr_prefect.errors import InvalidLeaseError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90m", timedelta(minutes=90), id="minutes"),
        pytest.param("1h30m", timedelta(minutes=90), id="hours-minutes"),
        pytest.param("1h 05m", timedelta(minutes=65), id="as-printed"),
        pytest.param("2H", timedelta(hours=2), id="upper-case"),
        pytest.param("45s", timedelta(seconds=45), id="seconds"),
        pytest.param("1d", timedelta(days=1), id="days"),
        pytest.param("1:30:00", timedelta(minutes=90), id="timespan"),
        pytest.param("4:0:0", timedelta(hours=4), id="timespan-single-digits"),
        pytest.param("04:00:00", timedelta(hours=4), id="timespan-padded"),
        pytest.param("1.02:30:00", timedelta(days=1, hours=2, minutes=30), id="timespan-days"),
        pytest.param("00:30:00.5", timedelta(minutes=30, milliseconds=500), id="timespan-fraction"),
        pytest.param("1:30", timedelta(minutes=90), id="dotnet-hh-mm"),
        pytest.param(" 90m ", timedelta(minutes=90), id="spaces"),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    """Units, TimeSpans and .NET's hh:mm all parse to the same durations."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("90", id="bare-number-is-ambiguous"),
        pytest.param("", id="empty"),
        pytest.param("soon", id="words"),
        pytest.param("1:60", id="minutes-over-59"),
        pytest.param("25:00:00", id="hours-over-23"),
        pytest.param("m", id="unit-alone"),
        pytest.param("-1h", id="negative"),
        pytest.param("\u0669\u0660m", id="non-ascii-digits"),
        pytest.param("\u0661:30", id="non-ascii-hh-mm"),
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    """Anything else is refused with a message giving the accepted forms."""
    with pytest.raises(InvalidLeaseError):
        parse_duration(text)


def test_bare_number_suggests_units() -> None:
    """A number without unit is not guessed (.NET would read 90 as 90 days)."""
    with pytest.raises(InvalidLeaseError, match="90m"):
        parse_duration("90")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(timedelta(minutes=65), "1h 05m", id="hours-minutes"),
        pytest.param(timedelta(hours=24), "24h 00m", id="a-day"),
        pytest.param(timedelta(minutes=5, seconds=59), "5m", id="rounded-down"),
        pytest.param(timedelta(seconds=45), "45s", id="under-a-minute"),
        pytest.param(timedelta(0), "0m", id="zero"),
        pytest.param(timedelta(minutes=-3), "0m", id="negative-is-over"),
        pytest.param(None, "-", id="unknown"),
    ],
)
def test_format_duration(value: timedelta | None, text: str) -> None:
    """Durations print as `1h 05m`, never as raw seconds or floats."""
    assert format_duration(value) == text


def test_printed_durations_parse_back() -> None:
    """What `arr` prints can be typed back."""
    for minutes in (1, 59, 60, 61, 125, 1440):
        value = timedelta(minutes=minutes)
        assert parse_duration(format_duration(value)) == value
