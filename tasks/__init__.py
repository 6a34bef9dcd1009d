"""Prefect tasks for Azure Remote Rendering sessions: one per API step, plus waiting.

Drop them into any flow, ``def`` or ``async def``. In sync code each returns its value::

    from datetime import timedelta
    from prefect import flow
    from arr_prefect.tasks import create_session, stop_session, wait_until_ready

    @flow
    def my_render():
        session = create_session(lease=timedelta(minutes=30), size="standard")
        try:
            session = wait_until_ready(session.id)
            ...  # connect to session.hostname:session.handshake_port and render
        finally:
            stop_session(session.id)

and in async code the same names are awaited (``await create_session(...)``). Each also
has an explicit async form, the name prefixed with ``a`` (``acreate_session``,
``await_until_ready`` for ``wait_until_ready``, ``astop_session`` ...), which only async
code may call: sync code calling it gets a ``TypeError`` naming the sync form.

For create → wait → job → stop with teardown guaranteed (and a rolling lease), use
``arr_prefect.flows.rendering_session`` instead of composing these by hand.
"""

from __future__ import annotations

from arr_prefect.tasks.sessions import (
    acreate_session,
    aextend_session,
    aget_access_token,
    aget_session,
    alist_sessions,
    astop_session,
    await_until_ready,
    create_session,
    extend_session,
    get_access_token,
    get_session,
    list_sessions,
    stop_session,
    wait_until_ready,
)

__all__ = [
    "acreate_session",
    "aextend_session",
    "aget_access_token",
    "aget_session",
    "alist_sessions",
    "astop_session",
    "await_until_ready",
    "create_session",
    "extend_session",
    "get_access_token",
    "get_session",
    "list_sessions",
    "stop_session",
    "wait_until_ready",
]
