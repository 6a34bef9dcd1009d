"""Durations as operators type them, and as ``arr`` prints them.

Accepted (:func:`parse_duration`):

- units: ``90m``, ``1h30m``, ``1h 30m``, ``2h``, ``45s``, ``1d`` (what ``arr`` prints can be
  typed back);
- the .NET TimeSpan forms the API and the vendor's ``arrconfig.json`` use: ``1:30:00``,
  ``4:0:0``, ``04:00:00``, ``1.02:30:00`` (days), ``00:30:00.5``, and ``hh:mm`` (``1:30`` is
  one hour thirty, as .NET's ``TimeSpan.Parse`` reads it).

A bare number is refused: .NET reads ``90`` as ninety *days*, a person usually means
minutes, and guessing wrong rents a GPU for the wrong time.
"""

from __future__ import annotations

import re
from datetime import timedelta

from arr_prefect.errors import InvalidLeaseError, TimeSpanFormatError
from arr_prefect.models import parse_timespan

__all__ = ["format_duration", "parse_duration"]

_UNITS = re.compile(
    r"^(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?$",
    re.IGNORECASE | re.ASCII,
)
_HOURS_MINUTES = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{1,2})$", re.ASCII)

_FORMS = "e.g. 90m, 1h30m, 1:30:00 or 1.02:30:00 (days.hh:mm:ss)"


def parse_duration(text: str) -> timedelta:
    """Parse a duration typed by a person; anything else is an :class:`InvalidLeaseError`."""
    value = text.strip()
    if not value:
        raise InvalidLeaseError(f"empty duration: expected {_FORMS}")
    if value.isascii() and value.isdigit():
        raise InvalidLeaseError(
            f"{text!r} has no unit: write {value}m (minutes), {value}h (hours) or a TimeSpan"
            f" such as 1:30:00"
        )
    units = _UNITS.match(value)
    if units is not None and any(units.groupdict().values()):
        days, hours, minutes, seconds = (int(units[k] or 0) for k in ("d", "h", "m", "s"))
        try:
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except OverflowError:
            raise InvalidLeaseError(f"{text!r} is far too long a duration") from None
    short = _HOURS_MINUTES.match(value)
    if short is not None:
        hours, minutes = int(short["h"]), int(short["m"])
        if hours > 23 or minutes > 59:
            raise InvalidLeaseError(
                f"{text!r} is not a TimeSpan: hours must be 0-23 and minutes 0-59"
            )
        return timedelta(hours=hours, minutes=minutes)
    try:
        return parse_timespan(value)
    except TimeSpanFormatError:
        raise InvalidLeaseError(f"{text!r} is not a duration: expected {_FORMS}") from None


def format_duration(value: timedelta | None) -> str:
    """``1h 05m`` (whole minutes, rounded down); ``45s`` under a minute; ``-`` when unknown.

    A negative duration (a lease already over) prints as ``0m``.
    """
    if value is None:
        return "-"
    seconds = max(0, int(value.total_seconds()))
    if 0 < seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"
