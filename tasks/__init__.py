"""Prefect tasks for Azure Remote Rendering sessions: one per API step, plus waiting.

Drop them into any flow::

    from datetime import timedelta
    from prefect import flow
    from arr_prefect.tasks import create_session, stop_session, wait_until_ready

    @flow
    async def my_render():
        session = await create_session(lease=timedelta(minutes=30), size="standard")
        try:
            session = await wait_until_ready(session.id)
            ...  # connect to session.hostname:session.handshake_port and render
        finally:
            await stop_session(session.id)

For create → wait → job → stop with teardown guaranteed (and a rolling lease), use
``arr_prefect.flows.rendering_session`` instead of composing these by hand.
"""

from __future__ import annotations

from arr_prefect.tasks.sessions import (
    create_session,
    extend_session,
    get_access_token,
    get_session,
    list_sessions,
    stop_session,
    wait_until_ready,
)

__all__ = [
    "create_session",
    "extend_session",
    "get_access_token",
    "get_session",
    "list_sessions",
    "stop_session",
    "wait_until_ready",
]
