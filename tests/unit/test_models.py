"""Models: .NET TimeSpans, leases, sizes, statuses, session IDs and the Session value.

Each API version's property shapes are read by its dialect: tests/unit/test_dialects.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arr_prefect.errors import (
    InvalidInputError,
    InvalidLeaseError,
    InvalidSessionIdError,
    InvalidSizeError,
    TimeSpanFormatError,
)
from arr_prefect.models import (
    MAX_LEASE,
    Session,
    SessionSize,
    SessionStatus,
    format_timespan,
    lease_minutes,
    parse_lease,
    parse_timespan,
    validate_session_id,
)

# The .NET "c" grammar as a regex (the parser splits instead): the oracle for a property test.
_TIMESPAN_GRAMMAR = re.compile(
    r"^(?P<sign>-)?(?:(?P<d>[0-9]{1,8})\.)?(?P<h>[0-9]{1,2}):(?P<m>[0-9]{1,2}):(?P<s>[0-9]{1,2})"
    r"(?:\.(?P<f>[0-9]{1,7}))?$"
)


class TestParseTimespan:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("4:0:0", timedelta(hours=4), id="single-digit-fields"),
            pytest.param("04:00:00", timedelta(hours=4), id="two-digit-fields"),
            pytest.param("1.02:30:00", timedelta(days=1, hours=2, minutes=30), id="days"),
            pytest.param("00:00:01.5", timedelta(seconds=1.5), id="fraction"),
            pytest.param("00:00:00.1234567", timedelta(microseconds=123456), id="ticks-truncated"),
            pytest.param("-1:00:00", -timedelta(hours=1), id="negative"),
            pytest.param(" 04:00:00 ", timedelta(hours=4), id="surrounding-space"),
            pytest.param("23:59:59", timedelta(hours=23, minutes=59, seconds=59), id="max-fields"),
        ],
    )
    def test_parses_dotnet_timespans(self, text: str, expected: timedelta) -> None:
        """Every TimeSpan spelling the service uses parses to the same duration."""
        assert parse_timespan(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("abc", id="letters"),
            pytest.param("25:00:00", id="hours-over-23"),
            pytest.param("1:60:00", id="minutes-over-59"),
            pytest.param("1:00:60", id="seconds-over-59"),
            pytest.param("", id="empty"),
            pytest.param("4h", id="unit-suffix"),
            pytest.param("1.2.3", id="dots-only"),
            pytest.param("4:00", id="no-seconds"),
            pytest.param("1:2:3:4", id="four-fields"),
            pytest.param("00:00:00.12345678", id="eight-fraction-digits"),
            pytest.param("+1:00:00", id="plus-sign"),
            pytest.param("1:00:00\n2:00:00", id="two-lines"),
            pytest.param("\u0664:\u0660:\u0660", id="arabic-indic-digits"),
            pytest.param("\uff14:0:0", id="fullwidth-digit"),
            pytest.param("4:0:0.\u0661", id="arabic-indic-fraction"),
            pytest.param("\u0967.04:00:00", id="devanagari-days"),
        ],
    )
    def test_rejects_non_timespans(self, text: str) -> None:
        """Anything that is not [-][d.]hh:mm:ss[.fffffff] is a TimeSpanFormatError."""
        with pytest.raises(TimeSpanFormatError):
            parse_timespan(text)

    @pytest.mark.parametrize(
        "value", [pytest.param(14400, id="int"), pytest.param(None, id="none")]
    )
    def test_rejects_non_strings(self, value: Any) -> None:
        """A non-string is refused with the same error, not a TypeError."""
        with pytest.raises(TimeSpanFormatError):
            parse_timespan(value)

    def test_format_error_is_a_value_error(self) -> None:
        """TimeSpanFormatError is both an InvalidInputError and a ValueError."""
        with pytest.raises(ValueError, match="not a TimeSpan") as info:
            parse_timespan("abc")
        assert isinstance(info.value, InvalidInputError)

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            pytest.param(timedelta(hours=4), "04:00:00", id="hours"),
            pytest.param(timedelta(days=1, hours=2, minutes=30), "1.02:30:00", id="days"),
            pytest.param(timedelta(seconds=1.5), "00:00:01.5000000", id="fraction"),
            pytest.param(-timedelta(hours=1), "-01:00:00", id="negative"),
            pytest.param(timedelta(0), "00:00:00", id="zero"),
        ],
    )
    def test_formats_like_the_service(self, value: timedelta, text: str) -> None:
        """Durations are written as the service writes them: hh:mm:ss, days and 7 digits."""
        assert format_timespan(value) == text

    @given(
        st.timedeltas(min_value=timedelta(days=-1000), max_value=timedelta(days=1000)),
    )
    def test_format_then_parse_round_trips(self, value: timedelta) -> None:
        """parse_timespan(format_timespan(td)) == td to the microsecond."""
        assert parse_timespan(format_timespan(value)) == value

    @given(
        st.timedeltas(min_value=timedelta(days=-1000), max_value=timedelta(days=1000)),
    )
    def test_parse_then_format_round_trips(self, value: timedelta) -> None:
        """A formatted TimeSpan is a fixed point of parse-then-format."""
        text = format_timespan(value)
        assert format_timespan(parse_timespan(text)) == text

    @given(
        st.from_regex(
            r"\A-?([0-9\u0664]{1,9}\.)?[0-9\uff14]{1,3}:[0-9]{1,3}:[0-9\u0661]{1,3}(\.[0-9]{1,8})?\Z"
        )
        | st.text(alphabet="0123456789.:-+ \u0664\uff14", max_size=14)
    )
    def test_parses_exactly_what_the_grammar_allows(self, text: str) -> None:
        """The split-based parser accepts and reads exactly what the .NET grammar's regex does."""
        match = _TIMESPAN_GRAMMAR.match(text.strip())
        if match is None or int(match["h"]) > 23 or int(match["m"]) > 59 or int(match["s"]) > 59:
            with pytest.raises(TimeSpanFormatError):
                parse_timespan(text)
            return
        expected = timedelta(
            days=int(match["d"] or 0),
            hours=int(match["h"]),
            minutes=int(match["m"]),
            seconds=int(match["s"]),
            microseconds=int((match["f"] or "").ljust(7, "0")[:6]),
        )
        assert parse_timespan(text) == (-expected if match["sign"] else expected)


class TestParseLease:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            pytest.param("abc", "invalid lease: 'abc' is not a TimeSpan", id="not-a-timespan"),
            pytest.param("-1:00:00", "longer than zero, got '-01:00:00'", id="negative"),
            pytest.param(0, "longer than zero, got '00:00:00'", id="zero-minutes"),
            pytest.param("00:00:00", "longer than zero", id="zero-timespan"),
            pytest.param("1.00:00:01", "at most 24 hours", id="a-second-over-24h"),
            pytest.param(timedelta(hours=25), "at most 24 hours", id="25h-timedelta"),
            pytest.param(24 * 60 + 1, "at most 24 hours", id="1441-minutes"),
            pytest.param(True, "must be a duration, got True", id="bool"),
            pytest.param(None, "got NoneType", id="none"),
            pytest.param([90], "got list", id="list"),
            pytest.param(float("nan"), "finite number of minutes, got nan", id="nan"),
            pytest.param(float("inf"), "finite number of minutes", id="inf"),
            pytest.param(10**20, "at most 24 hours", id="huge-int"),
            pytest.param(1e300, "at most 24 hours", id="huge-float"),
            pytest.param(-(10**20), "longer than zero", id="huge-negative-int"),
        ],
    )
    def test_rejects_bad_leases(self, value: Any, message: str) -> None:
        """A lease that is not a positive duration of at most 24 h is an InvalidLeaseError."""
        with pytest.raises(InvalidLeaseError, match=message.replace(".", r"\.")):
            parse_lease(value)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(90, timedelta(minutes=90), id="minutes-int"),
            pytest.param(0.5, timedelta(seconds=30), id="minutes-float"),
            pytest.param("1:30:00", timedelta(minutes=90), id="timespan"),
            pytest.param(timedelta(hours=2), timedelta(hours=2), id="timedelta"),
            pytest.param(MAX_LEASE, MAX_LEASE, id="exactly-24h"),
            pytest.param("1.00:00:00", MAX_LEASE, id="one-day-timespan"),
        ],
    )
    def test_accepts_durations(self, value: Any, expected: timedelta) -> None:
        """Minutes, TimeSpan strings and timedeltas all give the same lease."""
        assert parse_lease(value) == expected

    @pytest.mark.parametrize(
        ("value", "minutes"),
        [
            pytest.param(timedelta(minutes=15), 15, id="whole"),
            pytest.param(timedelta(minutes=15, seconds=1), 16, id="rounded-up"),
            pytest.param(timedelta(microseconds=1), 1, id="tiny"),
        ],
    )
    def test_lease_minutes_rounds_up(self, value: timedelta, minutes: int) -> None:
        """2021-01-01 minutes are rounded up so a lease is never cut short."""
        assert lease_minutes(value) == minutes


class TestSessionSize:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("standard", SessionSize.STANDARD, id="v1-spelling"),
            pytest.param("Standard", SessionSize.STANDARD, id="2021-spelling"),
            pytest.param("PREMIUM", SessionSize.PREMIUM, id="upper"),
            pytest.param(" premium ", SessionSize.PREMIUM, id="spaces"),
            pytest.param(SessionSize.PREMIUM, SessionSize.PREMIUM, id="member"),
        ],
    )
    def test_parse_is_case_insensitive(self, text: Any, expected: SessionSize) -> None:
        """Sizes parse whatever their case."""
        assert SessionSize.parse(text) is expected

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("big", id="unknown"),
            pytest.param("", id="empty"),
            pytest.param(None, id="none"),
            pytest.param(1, id="int"),
        ],
    )
    def test_parse_rejects_unknown_sizes(self, value: Any) -> None:
        """Anything but standard/premium is an InvalidSizeError naming the choices."""
        with pytest.raises(InvalidSizeError, match="'standard', 'premium'"):
            SessionSize.parse(value)


class TestSessionStatus:
    @pytest.mark.parametrize(
        ("status", "terminal", "active"),
        [
            pytest.param(SessionStatus.STARTING, False, True, id="starting"),
            pytest.param(SessionStatus.READY, False, True, id="ready"),
            pytest.param(SessionStatus.STOPPING, False, False, id="stopping"),
            pytest.param(SessionStatus.STOPPED, True, False, id="stopped"),
            pytest.param(SessionStatus.EXPIRED, True, False, id="expired"),
            pytest.param(SessionStatus.ERROR, True, False, id="error"),
        ],
    )
    def test_terminal_and_active(self, status: SessionStatus, terminal: bool, active: bool) -> None:
        """Stopped, Expired and Error are terminal; Starting and Ready hold a VM."""
        assert status.is_terminal is terminal
        assert status.is_active is active

    @pytest.mark.parametrize(
        "text", [pytest.param("ready", id="lower"), pytest.param(" READY ", id="upper-spaces")]
    )
    def test_parse_is_case_insensitive(self, text: str) -> None:
        """Statuses parse whatever their case."""
        assert SessionStatus.parse(text) is SessionStatus.READY

    def test_parse_rejects_unknown(self) -> None:
        """An unknown status is a ValueError naming it."""
        with pytest.raises(ValueError, match="'Sleeping'"):
            SessionStatus.parse("Sleeping")


class TestValidateSessionId:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("../x", id="dot-dot"),
            pytest.param("a/b", id="slash"),
            pytest.param("a?b", id="query"),
            pytest.param("a#b", id="fragment"),
            pytest.param("%2F", id="percent-encoded-slash"),
            pytest.param("", id="empty"),
            pytest.param("a" * 257, id="257-chars"),
            pytest.param("a b", id="space"),
            pytest.param("abc\n", id="trailing-newline"),
            pytest.param("é", id="non-ascii"),
            pytest.param(None, id="none"),
        ],
    )
    def test_rejects_unsafe_ids(self, value: Any) -> None:
        """An ID that could change the request path is an InvalidSessionIdError."""
        with pytest.raises(InvalidSessionIdError):
            validate_session_id(value)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("e13d2c44-63e0-4591-991e-f9e05e599a93", id="guid"),
            pytest.param("My_Session-1", id="letters-digits-dash-underscore"),
            pytest.param("a" * 256, id="256-chars"),
            pytest.param("a", id="one-char"),
        ],
    )
    def test_accepts_safe_ids(self, value: str) -> None:
        """Letters, digits, '-' and '_', 1 to 256 of them, pass unchanged."""
        assert validate_session_id(value) == value


class TestSession:
    def test_session_is_frozen(self) -> None:
        """Sessions are values: assigning to a field fails."""
        session = Session(id="s1", status=SessionStatus.READY)
        with pytest.raises(ValueError, match="frozen"):
            session.id = "other"  # type: ignore[misc]

    def test_remaining_needs_lease_and_elapsed(self) -> None:
        """The lease left is lease minus elapsed, and None while either is unknown."""
        ready = Session(
            id="s1", status="Ready", max_lease=timedelta(hours=4), elapsed=timedelta(seconds=1)
        )
        assert ready.remaining == timedelta(hours=4) - timedelta(seconds=1)
        assert Session(id="s1", status="Starting").remaining is None
