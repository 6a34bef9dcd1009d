"""Session models, normalised across both API versions, and .NET TimeSpan handling.

API facts relied on here (ARR_API.md §3, §4):

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
from typing import Any, Literal

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
        for member in cls:
            if isinstance(value, str) and member.value.lower() == value.strip().lower():
                return member
        choices = ", ".join(repr(m.value.lower()) for m in cls)
        raise InvalidSizeError(f"unknown session size {value!r}: expected one of {choices}")

    def wire(self, api_version: ApiVersion) -> str:
        """The spelling each API version expects on the wire."""
        return self.value.lower() if api_version == "v1" else self.value


# .NET TimeSpan "c" format: [-][d.]hh:mm:ss[.fffffff]; hours 0-23, minutes and seconds 0-59.
# The service also accepts single-digit fields ("4:0:0"), as the seed's examples show.
# Digits are ASCII 0-9 only, as .NET's TimeSpan parser reads them: Python's \d (and int())
# would also take Arabic-Indic "٤:٠:٠" or fullwidth "４:0:0" as four hours.
_TIMESPAN = re.compile(
    r"^(?P<sign>-)?(?:(?P<days>[0-9]{1,8})\.)?(?P<hours>[0-9]{1,2}):(?P<minutes>[0-9]{1,2}):"
    r"(?P<seconds>[0-9]{1,2})(?:\.(?P<fraction>[0-9]{1,7}))?$"
)


def parse_timespan(value: str) -> timedelta:
    """Parse a .NET TimeSpan string (``4:0:0``, ``04:00:00``, ``1.02:30:00``).

    Fractions of a second keep microsecond precision (.NET ticks are 100 ns; the last
    digit is dropped). Anything else raises :class:`TimeSpanFormatError`.
    """
    if not isinstance(value, str):
        raise TimeSpanFormatError(f"a TimeSpan must be a string like '04:00:00', got {value!r}")
    match = _TIMESPAN.match(value.strip())
    if match is None:
        raise TimeSpanFormatError(
            f"{value!r} is not a TimeSpan: expected [d.]hh:mm:ss[.fffffff], e.g. '04:00:00',"
            " '4:0:0' or '1.02:30:00'"
        )
    hours, minutes, seconds = (int(match[k]) for k in ("hours", "minutes", "seconds"))
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeSpanFormatError(
            f"{value!r} is not a TimeSpan: hours must be 0-23 and minutes and seconds 0-59"
            " (write more than a day as 'd.hh:mm:ss')"
        )
    fraction = (match["fraction"] or "").ljust(7, "0")[:6]
    result = timedelta(
        days=int(match["days"] or 0),
        hours=hours,
        minutes=minutes,
        seconds=seconds,
        microseconds=int(fraction or 0),
    )
    return -result if match["sign"] else result


def format_timespan(value: timedelta) -> str:
    """Format a duration the way the service writes it: ``[-][d.]hh:mm:ss[.fffffff]``."""
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
    more than zero and at most 24 hours; anything else raises :class:`InvalidLeaseError`.
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
    """A rendering session, as either API version describes it."""

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

    @classmethod
    def from_v1(cls, body: dict[str, Any]) -> Session:
        """Build from a v1 properties object (``sessionId``, ``sessionStatus``, ...)."""
        size = body.get("sessionSize")
        lease = body.get("sessionMaxLeaseTime")
        elapsed = body.get("sessionElapsedTime")
        return cls(
            id=str(body["sessionId"]),
            status=SessionStatus.parse(body["sessionStatus"]),
            size=SessionSize.parse(size) if size else None,
            hostname=body.get("sessionHostname") or None,
            handshake_port=body.get("handshakePort"),
            arr_inspector_port=body.get("arrInspectorPort"),
            max_lease=parse_timespan(lease) if lease else None,
            elapsed=parse_timespan(elapsed) if elapsed else None,
            message=body.get("message"),
        )

    @classmethod
    def from_v2021(cls, body: dict[str, Any]) -> Session:
        """Build from a 2021-01-01 properties object (``id``, ``status``, minutes ...)."""
        error = body.get("error") or None
        size = body.get("size")
        lease = body.get("maxLeaseTimeMinutes")
        elapsed = body.get("elapsedTimeMinutes")
        created = body.get("creationTime")
        return cls(
            id=str(body["id"]),
            status=SessionStatus.parse(body["status"]),
            size=SessionSize.parse(size) if size else None,
            hostname=body.get("hostname") or None,
            handshake_port=body.get("handshakePort"),
            arr_inspector_port=body.get("arrInspectorPort"),
            max_lease=timedelta(minutes=lease) if lease is not None else None,
            elapsed=timedelta(minutes=elapsed) if elapsed is not None else None,
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            teraflops=body.get("teraflops"),
            message=error.get("message") if isinstance(error, dict) else None,
            error_code=error.get("code") if isinstance(error, dict) else None,
        )

    @property
    def remaining(self) -> timedelta | None:
        """Lease left, when both the lease and the elapsed time are known."""
        if self.max_lease is None or self.elapsed is None:
            return None
        return self.max_lease - self.elapsed
