"""Job callables the flow tests refer to by import path."""

from __future__ import annotations

import asyncio

from arr_prefect.models import Session


async def block_forever(session: Session) -> None:
    """A job that never finishes on its own (only a timeout or cancel ends it)."""
    await asyncio.Event().wait()


def return_hostname(session: Session) -> str | None:
    """A synchronous job: callables need not be async."""
    return session.hostname
