"""Job callables the flow tests refer to by import path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from arr_prefect.models import Session

on_start: Callable[[Session], None] | None = None
"""Set by a test (monkeypatch): called with the session when :func:`block_forever` starts."""


async def block_forever(session: Session) -> None:
    """A job that never finishes on its own (only a timeout or cancel ends it)."""
    if on_start is not None:
        on_start(session)
    await asyncio.Event().wait()


def return_hostname(session: Session) -> str | None:
    """A synchronous job: callables need not be async."""
    return session.hostname
