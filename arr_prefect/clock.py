"""Clocks: the one place where time comes from, so tests can drive it.

Everything that waits or reads the time (the client's retry back-off and polling, the
token cache, the lease keeper, the emulator's state machine) takes a :class:`Clock`.

- :class:`SystemClock` is real time.
- :class:`ScaledClock` runs ``scale`` times faster than real time (the emulator's
  ``--time-scale``): one real second is ``scale`` emulated seconds.
- :class:`VirtualClock` only moves when told (:meth:`VirtualClock.advance`) or, with
  ``autojump=True``, jumps straight to the next sleeper's deadline whenever every sleeper
  is waiting on it. Tests share one between the emulator and the client, so hours of lease
  run in milliseconds and in a fixed order.

The process default (:func:`default_clock`) is real time unless ``ARR_TIME_SCALE`` is set
in the environment: then it is a :class:`ScaledClock` of that scale, so a process started
by someone else (a Prefect worker's flow run) keeps time with an ``arr-emulator
--time-scale`` of the same scale. It is opt-in, for emulators only: a real service runs in
real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

__all__ = [
    "TIME_SCALE_ENV",
    "Clock",
    "ScaledClock",
    "SystemClock",
    "VirtualClock",
    "clock_from_environment",
    "default_clock",
    "use_clock",
]

TIME_SCALE_ENV = "ARR_TIME_SCALE"
"""Environment variable: emulated seconds per real second of the process default clock."""


@runtime_checkable
class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a way to wait for them to pass."""

    def time(self) -> float:
        """Seconds since the Unix epoch, as this clock sees them."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` of this clock's time have passed."""
        ...


class SystemClock:
    """Real time."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class ScaledClock:
    """Time that runs ``scale`` times faster than real time, starting from now.

    Args:
        scale: Emulated seconds per real second (``arr-emulator --time-scale``).
        start: Where the clock starts, in seconds since the epoch (default: now).

    Raises:
        ValueError: ``scale`` is not positive.
    """

    def __init__(self, scale: float = 1.0, *, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale!r}")
        self.scale = scale
        self._origin_real = time.monotonic()
        self._origin = time.time() if start is None else start

    def time(self) -> float:
        return self._origin + (time.monotonic() - self._origin_real) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self.scale})"


class VirtualClock:
    """A clock that moves only when advanced.

    ``sleep`` parks the caller until the clock reaches its deadline. With
    ``autojump=True`` a sleeper that finds the event loop otherwise idle (every other
    task is parked too, checked by yielding to the loop ``idle_yields`` times) moves the
    clock to the earliest deadline, so concurrent loops (a job, a lease keeper, a poller)
    interleave exactly as they would in real time, without waiting for it.

    Args:
        start: Where the clock starts, in seconds since the epoch.
        autojump: Jump to the earliest deadline whenever every task is asleep.
        idle_yields: How many times a sleeper yields to the loop before it calls the
            loop idle (``autojump`` only).
    """

    def __init__(
        self,
        start: float = 1_700_000_000.0,
        *,
        autojump: bool = False,
        idle_yields: int = 20,
    ) -> None:
        self._now = float(start)
        self.autojump = autojump
        self.idle_yields = idle_yields
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._jumper: asyncio.Task[None] | None = None

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleeper whose deadline has come.

        Args:
            seconds: How far to move it.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._set(self._now + seconds)

    def _set(self, when: float) -> None:
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), fut))
        if self.autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = loop.create_task(self._jump_when_idle())
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()

    async def _jump_when_idle(self) -> None:
        while True:
            # Let every runnable task run (including ones waiting on in-process I/O such
            # as an ASGI transport) before deciding that time has to move.
            for _ in range(self.idle_yields):
                await asyncio.sleep(0)
            self._sleepers = [s for s in self._sleepers if not s[2].done()]
            heapq.heapify(self._sleepers)
            if not self._sleepers:
                return
            self._set(self._sleepers[0][0])

    def __repr__(self) -> str:
        return f"VirtualClock(time={self._now}, autojump={self.autojump})"


def clock_from_environment() -> Clock:
    """Real time, or a :class:`ScaledClock` when ``ARR_TIME_SCALE`` is set to a scale
    other than 1 (raises ``ValueError`` if it is not a positive number)."""
    raw = os.environ.get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return SystemClock()
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{TIME_SCALE_ENV} must be a positive number, got {raw!r}") from None
    if not scale > 0 or scale == float("inf"):
        raise ValueError(f"{TIME_SCALE_ENV} must be a positive number, got {raw!r}")
    return SystemClock() if scale == 1.0 else ScaledClock(scale)


# Chosen at first use, not import, so ARR_TIME_SCALE set before the first wait counts.
_default_clock: Clock | None = None


def default_clock() -> Clock:
    """The clock used where none is passed: :func:`use_clock`'s, else the environment's
    (real time unless ``ARR_TIME_SCALE`` is set)."""
    global _default_clock
    if _default_clock is None:
        _default_clock = clock_from_environment()
    return _default_clock


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Make ``clock`` the process default: the client, the lease keeper and the sample job
    then wait on it. The demo runs on a :class:`ScaledClock`, tests on a
    :class:`VirtualClock`."""
    global _default_clock
    previous, _default_clock = _default_clock, clock
    try:
        yield clock
    finally:
        _default_clock = previous
