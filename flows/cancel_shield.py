"""Teardown is never cut short by a cancel: :func:`finish_despite_cancel`.

An anyio shield stops anyio cancel scopes (Prefect's flow timeout) but not a plain
``task.cancel()`` (Ctrl-C, a TaskGroup, a pipeline's own cancel). The create (whose
session ID must always be learnt), the stop and the lease keeper's shutdown therefore run
as their own asyncio task that the caller waits for through ``asyncio.shield``; cancels
that reach the caller meanwhile are held, and delivered once the work is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import anyio

__all__ = ["deliver_held_cancel", "finish_despite_cancel"]

T = TypeVar("T")


async def finish_despite_cancel(
    awaitable: Awaitable[T], cancels_seen: list[BaseException] | None = None
) -> T:
    """Await ``awaitable`` to completion even if the caller is cancelled meanwhile.

    Teardown must not be cut short: an anyio shield stops anyio cancel scopes (Prefect's
    flow timeout) but not a plain ``task.cancel()`` (Ctrl-C, a TaskGroup, a pipeline's own
    cancel). The work runs as its own task; cancels that reach the caller while it runs are
    recorded in ``cancels_seen`` for the caller to re-raise once teardown is done.

    Args:
        awaitable: The work to finish (a coroutine, a future or a task).
        cancels_seen: Where to record each cancel that reached the caller meanwhile; None
            to drop them (the caller is already on its way out with another exception).

    Returns:
        What ``awaitable`` returned.

    Raises:
        BaseException: Whatever ``awaitable`` raised, once it is done (a cancel of the
            work itself included).
    """
    task = asyncio.ensure_future(awaitable)
    with anyio.CancelScope(shield=True):
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError as exc:
                if task.done():
                    raise
                if cancels_seen is not None:
                    cancels_seen.append(exc)
    raise AssertionError("unreachable")  # pragma: no cover - the loop only returns or raises


def deliver_held_cancel(cancels_seen: list[BaseException], held: int = 0) -> None:
    """Raise the cancel that :func:`finish_despite_cancel` held back, now that it may land.

    Args:
        cancels_seen: The list the shielded work recorded cancels in.
        held: How many of them were already delivered (or are being delivered by another
            exception); only cancels recorded after those are raised.

    Raises:
        asyncio.CancelledError: When a cancel arrived after the first ``held``.
    """
    if len(cancels_seen) > held:
        raise asyncio.CancelledError
