"""Session models, normalised across API versions, and .NET TimeSpan handling.

Each API version's wire shapes (paths, bodies, property names) are read and written by
its dialect (:mod:`arr_prefect.dialects`); this module knows no version. API facts relied
on here (ARR_API.md §3, §4):

- v1 speaks TimeSpan strings (``"4:0:0"``, ``"04:00:00"``, ``"1.02:30:00"``) and camelCase
  ``session*`` property names; sizes are sent lower-case (``"standard"``).
- 2021-01-01 speaks whole minutes (``maxLeaseTimeMinutes``, ``elapsedTimeMinutes``, the
  latter rounded down) and ``Standard``/``Premium``.
- The lease is always the *total* since the session became Ready, never an increment.
- The most a session can have is 24 hours.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from arr_prefect.errors import (
    InvalidLeaseError,
    InvalidSessionIdError,
    InvalidSizeError,
    TimeSpanFormatError,
)

__all__ = [
    "MAX_LEASE",
    "ApiVersion",
    "Session",
    "SessionSize",
    "SessionStatus",
    "format_timespan",
    "lease_minutes",
    "parse_lease",
    "parse_timespan",
    "validate_session_id",
]

ApiVersion = Literal["v1", "2021-01-01"]
"""The API versions settings accept: one per dialect in ``arr_prefect.dialects.DIALECTS``
(a test keeps the two the same)."""

MAX_LEASE = timedelta(hours=24)
"""The longest lease the service grants (ARR_API.md §5)."""


class SessionStatus(StrEnum):
    """A session's status. ``Stopping`` exists only in v1."""

    STARTING = "Starting"
    READY = "Ready"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    EXPIRED = "Expired"
    ERROR = "Error"

    @property
    def is_terminal(self) -> bool:
        """True when the session will never run (or bill) again."""
        return self in (SessionStatus.STOPPED, SessionStatus.EXPIRED, SessionStatus.ERROR)

    @property
    def is_active(self) -> bool:
        """True while the session holds (and bills for) a VM: Starting or Ready."""
        return self in (SessionStatus.STARTING, SessionStatus.READY)

    @classmethod
    def parse(cls, value: str) -> SessionStatus:
        """Parse a status as either API version spells it (case-insensitive)."""
        try:
            return _STATUSES[value]
        except (KeyError, TypeError):  # TypeError: unhashable
            pass
        for member in cls:
            if member.value.lower() == str(value).strip().lower():
                return member
        raise ValueError(f"unknown session status {value!r}")


class SessionSize(StrEnum):
    """The VM size of a session. v1 sends it lower-case, 2021-01-01 capitalised."""

    STANDARD = "Standard"
    PREMIUM = "Premium"

    @classmethod
    def parse(cls, value: str | SessionSize) -> SessionSize:
        """Parse a size case-insensitively; anything else is an :class:`InvalidSizeError`."""
        if isinstance(value, SessionSize):
            return value
        try:
            return _SIZES[value]
        except (KeyError, TypeError):  # TypeError: unhashable
            pass
        for member in cls:
            if isinstance(value, str) and member.value.lower() == value.strip().lower():
                return member
        choices = ", ".join(repr(m.value.lower()) for m in cls)
        raise InvalidSizeError(f"unknown session size {value!r}: expected one of {choices}")


# The spellings the service writes, looked up before any case-folding (lists parse many).
_STATUSES: dict[object, SessionStatus] = {m.value: m for m in SessionStatus}
_SIZES: dict[object, SessionSize] = {
    **{m.value: m for m in SessionSize},
    **{m.value.lower(): m for m in SessionSize},
}


# .NET TimeSpan "c" format: [-][d.]hh:mm:ss[.fffffff]; hours 0-23, minutes and seconds 0-59.
# The service also accepts single-digit fields ("4:0:0"), as the seed's examples show.
# Digits are ASCII 0-9 only, as .NET's TimeSpan parser reads them: Python's str.isdigit()
# (and int()) would also take Arabic-Indic "٤:٠:٠" or fullwidth "４:0:0" as four hours.
# Read by splitting, not by a regex: a v1 session list carries two TimeSpans per session.
_TIMESPAN_HINT = "expected [d.]hh:mm:ss[.fffffff], e.g. '04:00:00', '4:0:0' or '1.02:30:00'"


def _ascii_number(text: str, longest: int) -> int | None:
    """``text`` as a number of 1 to ``longest`` ASCII digits, else None."""
    if 0 < len(text) <= longest and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_timespan(value: str) -> timedelta:
    """Parse a .NET TimeSpan string (``4:0:0``, ``04:00:00``, ``1.02:30:00``).

    Fractions of a second keep microsecond precision (.NET ticks are 100 ns; the last
    digit is dropped).

    Args:
        value: The TimeSpan text, as the service writes it (surrounding spaces allowed).

    Returns:
        The duration.

    Raises:
        TimeSpanFormatError: ``value`` is not a TimeSpan.
    """
    if not isinstance(value, str):
        raise TimeSpanFormatError(f"a TimeSpan must be a string like '04:00:00', got {value!r}")
    text = value.strip()
    negative = text.startswith("-")
    fields = text[1:].split(":") if negative else text.split(":")
    if len(fields) != 3:
        raise TimeSpanFormatError(f"{value!r} is not a TimeSpan: {_TIMESPAN_HINT}")
    days_text, has_days, hours_text = fields[0].rpartition(".")
    seconds_text, has_fraction, fraction = fields[2].partition(".")
    days = _ascii_number(days_text, 8) if has_days else 0
    hours = _ascii_number(hours_text, 2)
    minutes = _ascii_number(fields[1], 2)
    seconds = _ascii_number(seconds_text, 2)
    digits = _ascii_number(fraction, 7) if has_fraction else 0
    if days is None or hours is None or minutes is None or seconds is None or digits is None:
        raise TimeSpanFormatError(f"{value!r} is not a TimeSpan: {_TIMESPAN_HINT}")
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeSpanFormatError(
            f"{value!r} is not a TimeSpan: hours must be 0-23 and minutes and seconds 0-59"
            " (write more than a day as 'd.hh:mm:ss')"
        )
    microseconds = int(fraction.ljust(7, "0")[:6]) if has_fraction else 0
    result = timedelta(
        days=days, hours=hours, minutes=minutes, seconds=seconds, microseconds=microseconds
    )
    return -result if negative else result


def format_timespan(value: timedelta) -> str:
    """Format a duration the way the service writes it: ``[-][d.]hh:mm:ss[.fffffff]``.

    Args:
        value: The duration.

    Returns:
        Its TimeSpan text, e.g. ``"1.02:30:00"`` for a day, two hours and a half.
    """
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    days = value.days
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if days:
        text = f"{days}.{text}"
    if value.microseconds:
        text = f"{text}.{value.microseconds:06d}0"
    return sign + text


def parse_lease(value: str | timedelta | int | float) -> timedelta:
    """Turn what a user may give as a lease into a validated duration.

    Accepts a ``timedelta``, a TimeSpan string, or a number of minutes. A lease must be
    more than zero and at most 24 hours.

    Args:
        value: The lease as given.

    Returns:
        The lease as a duration.

    Raises:
        InvalidLeaseError: Not a duration, not positive, or over 24 hours.
    """
    if isinstance(value, bool):
        raise InvalidLeaseError(f"a lease must be a duration, got {value!r}")
    if isinstance(value, timedelta):
        lease = value
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidLeaseError(f"a lease must be a finite number of minutes, got {value!r}")
        try:
            lease = timedelta(minutes=value)
        except OverflowError:
            # Beyond timedelta's range (about 2.7 million years) either way.
            raise InvalidLeaseError(
                f"a lease must be longer than zero and at most 24 hours, got {value!r} minutes"
            ) from None
    elif isinstance(value, str):
        try:
            lease = parse_timespan(value)
        except TimeSpanFormatError as exc:
            raise InvalidLeaseError(f"invalid lease: {exc}") from None
    else:
        raise InvalidLeaseError(
            f"a lease must be a timedelta, a TimeSpan string or minutes, got {type(value).__name__}"
        )
    if lease <= timedelta(0):
        raise InvalidLeaseError(f"a lease must be longer than zero, got {format_timespan(lease)!r}")
    if lease > MAX_LEASE:
        raise InvalidLeaseError(
            f"a lease can be at most 24 hours (the service's limit), got {format_timespan(lease)!r}"
        )
    return lease


def lease_minutes(value: timedelta) -> int:
    """Whole minutes for the 2021-01-01 API, rounded up so a lease is never cut short."""
    return math.ceil(value.total_seconds() / 60)


_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


def validate_session_id(value: str) -> str:
    """Check a session ID before it goes into a URL path.

    Both API versions use IDs of letters, digits, ``-`` and ``_`` (v1's are GUIDs; the
    2021-01-01 API allows 1-256 such characters). Refusing anything else means no input can
    change the request path (``../``, ``/``, ``?``, ``%2F`` ...).
    """
    # fullmatch, not match: "$" also matches before a trailing newline.
    if not isinstance(value, str) or not _SESSION_ID.fullmatch(value):
        raise InvalidSessionIdError(
            f"invalid session id {value!r}: expected 1-256 letters, digits, '-' or '_'"
        )
    return value


class Session(BaseModel):
    """A rendering session, as every API version describes it.

    Each API version's dialect (:mod:`arr_prefect.dialects`) reads its own wire shape into
    this one model.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: SessionStatus
    size: SessionSize | None = None
    hostname: str | None = None
    handshake_port: int | None = None
    arr_inspector_port: int | None = None
    max_lease: timedelta | None = None
    elapsed: timedelta | None = None
    created_at: datetime | None = None
    teraflops: float | None = None
    message: str | None = None
    """The service's message (v1 ``message``, 2021-01-01 ``error.message``)."""
    error_code: str | None = None

    @property
    def remaining(self) -> timedelta | None:
        """Lease left, when both the lease and the elapsed time are known."""
        if self.max_lease is None or self.elapsed is None:
            return None
        return self.max_lease - self.elapsed
