"""Job callables the security tests run by import path."""

from __future__ import annotations

from arr_prefect.emulator import Emulator
from arr_prefect.models import Session

EMULATOR: list[Emulator] = []
"""The emulator of the running test (set by the test): jobs reach it here."""


async def revoke_tokens(session: Session) -> str:
    """Revoke every access token mid-run, so the lease keeper and teardown meet a 401."""
    for emulator in EMULATOR:
        emulator.expire_tokens()
    return session.id
