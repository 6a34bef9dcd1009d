"""One vocabulary for timings and money, in logs, summaries, artifacts and events.

- Durations read ``1 min 34 s`` (``format_duration``); machine-readable figures are whole
  or one-decimal seconds, never raw floats.
- The service billed a session by the minute while it ran, from the create request until
  it stopped (ARR_API.md §5): every minute *started* is billed, so 2 min 1 s bills 3
  minutes (``billed_minutes``).
- Money carries its currency (``ARR_PRICE_CURRENCY``, default USD): ``0.60 USD``. Prices
  are configuration (the published price list is not reproduced); without one there is
  no estimate, and :data:`PRICE_HINT` says how to get one.
"""

from __future__ import annotations

import math

__all__ = [
    "PRICE_HINT",
    "billed_minutes",
    "estimated_cost",
    "format_billing",
    "format_duration",
    "format_lease",
    "format_money",
    "round_seconds",
]

PRICE_HINT = (
    "no price configured: set ARR_PRICE_STANDARD_PER_HOUR / ARR_PRICE_PREMIUM_PER_HOUR"
    " (and ARR_PRICE_CURRENCY, default USD) for a cost estimate"
)


def round_seconds(seconds: float | None) -> float | None:
    """Seconds as a figure fit to show: one decimal (None stays None)."""
    return None if seconds is None else round(max(0.0, seconds), 1)


def format_duration(seconds: float | None) -> str:
    """``45 s``, ``1 min 34 s``, ``2 h 5 min``; ``-`` for None. Below 10 s, one decimal."""
    if seconds is None:
        return "-"
    # To the tenth first, as round_seconds keeps figures, then half up: a time shown from
    # its exact value and from its kept figure reads the same (455.49 s and 455.5 s are
    # both 7 min 36 s; Python's round() alone gave 7 min 35 s and 7 min 36 s).
    seconds = round(max(0.0, seconds), 1)
    if seconds < 10:
        text = f"{seconds:.1f}".rstrip("0").rstrip(".")
        return f"{text} s"
    total = math.floor(seconds + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def format_lease(seconds: float | None) -> str:
    """A session's lease as :func:`format_duration` prints it, from its whole seconds.

    Leases are set in whole seconds; the sub-second part a v1 session's lease carries is
    the client's create fingerprint (see :mod:`arr_prefect.dialects.v1`), not time anyone
    asked for, so a 10-minute lease reads ``10 min``, never ``10 min 1 s``.
    """
    return format_duration(None if seconds is None else float(math.floor(seconds)))


def billed_minutes(seconds: float | None) -> int | None:
    """Minutes the service bills for a session that ran ``seconds``: each minute started."""
    if seconds is None:
        return None
    # A hair of tolerance: 120.0000001 s measured on two clocks is still 2 minutes.
    return max(1, math.ceil(seconds / 60 - 1e-6))


def estimated_cost(minutes: int | None, price_per_hour: float | None) -> float | None:
    """The estimate for ``minutes`` billed at ``price_per_hour``, to the cent."""
    if minutes is None or price_per_hour is None:
        return None
    return round(minutes / 60 * price_per_hour, 2)


def format_money(amount: float | None, currency: str) -> str:
    """``0.60 USD``; ``-`` for None."""
    if amount is None:
        return "-"
    return f"{amount:.2f} {currency}"


def format_billing(seconds: float | None) -> str:
    """``3 min (2 min 1 s, billed per started minute)``; ``-`` when nothing ran."""
    minutes = billed_minutes(seconds)
    if minutes is None:
        return "-"
    return f"{minutes} min ({format_duration(seconds)} run, billed per started minute)"
