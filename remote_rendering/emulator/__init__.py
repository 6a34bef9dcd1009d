"""An emulator of the Azure Remote Rendering service: STS, the v1 and 2021-01-01 session
APIs, fault injection and an accounting view (see ARR_API.md for what it reproduces).

In-process, for tests::

    emu = Emulator(clock=VirtualClock(), startup_seconds=30)
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as c:
        ...
    assert emu.running() == []          # nothing leaked

Over real HTTP: ``with emu.serve() as base_url: ...``, or the ``arr-emulator`` command.
"""

from __future__ import annotations

from remote_rendering.emulator.app import EmulatedConnectionDrop, create_app
from remote_rendering.emulator.faults import FaultController, FaultKind, ScriptedFault
from remote_rendering.emulator.service import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from remote_rendering.emulator.state import ApiError, EmulatorState, SessionRecord

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_ACCOUNT_KEY",
    "ApiError",
    "EmulatedConnectionDrop",
    "Emulator",
    "EmulatorState",
    "FaultController",
    "FaultKind",
    "ScriptedFault",
    "SessionRecord",
    "create_app",
]
