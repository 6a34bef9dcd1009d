"""stop_owned_sessions (the on_cancellation / on_crashed hook) tries the stop even when it
cannot look the session up first: it may be the only layer left."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from prefect import flow, get_client

from arr_prefect.emulator import Emulator
from arr_prefect.flows import record_session_owner, stop_owned_sessions
from arr_prefect.tasks import create_session

pytestmark = pytest.mark.usefixtures("arr")

GET_ROUTE = {"v1": "v1.get", "2021-01-01": "v2021.get"}


@flow
async def leaves_a_session_behind() -> str:
    """A run that records its session and never stops it."""
    session = await create_session(lease=timedelta(minutes=30))
    await record_session_owner(session.id)
    return session.id


async def test_stops_even_when_the_status_lookup_fails(
    emulator: Emulator, api_version: str
) -> None:
    """Every status lookup fails (503 through all the client's retries): the hook still
    sends the stop, and the session ends."""
    state = await leaves_a_session_behind(return_state=True)
    session_id = await state.aresult()
    async with get_client() as prefect:
        run = await prefect.read_flow_run(UUID(str(state.state_details.flow_run_id)))
    emulator.faults.add(kind="server_error", route=GET_ROUTE[api_version], times=1000)
    await stop_owned_sessions(leaves_a_session_behind, run, state)
    assert emulator.request_count(GET_ROUTE[api_version], 503) >= 2  # retried, then gave up
    assert emulator.running() == []
    emulator.faults.clear()
    assert [(e["id"], e["end_reason"]) for e in emulator.ledger()["sessions"]] == [
        (session_id, "stopped")
    ]
