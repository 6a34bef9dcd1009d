"""Once a create is sent, the session's ID is always learnt: :func:`create_shielded`.

A cancel landing while the create is in flight would otherwise leave a session the
service made and nobody knows of, billed until its lease runs out. The create runs to
its answer (bounded by :data:`CREATE_SHIELD_SECONDS`: a v1 create may spend a while
reconciling a lost answer); the cancel is held and delivered once teardown's stop is
certain to follow.
"""

from __future__ import annotations

from datetime import timedelta

import anyio

from arr_prefect.flows.always_stopped import stop_in_teardown
from arr_prefect.flows.api_calls import ClientCalls
from arr_prefect.flows.cancel_shield import finish_despite_cancel
from arr_prefect.flows.report import SessionReport
from arr_prefect.flows.stopped_if_process_dies import ProcessGuard
from arr_prefect.models import Session, SessionSize

__all__ = ["CREATE_SHIELD_SECONDS", "create_shielded"]

# A v1 create may spend a while reconciling a lost answer; it is shielded from
# cancellation (so the session's ID is always learnt) for at most this long.
CREATE_SHIELD_SECONDS = 300.0


async def create_shielded(
    calls: ClientCalls,
    report: SessionReport,
    guard: ProcessGuard,
    cancels_seen: list[BaseException],
    session_id: str | None,
    lease: timedelta,
    size: SessionSize,
    models: list[str] | None,
) -> Session:
    """Create the session, to its answer despite a cancel meanwhile.

    A create that fails (or times out) after the client named the session is followed by
    a stop of that ID: the request may have reached the service, and stopping an unknown
    ID is harmless. Where the service names the session, the guard is told the create is
    in flight before it is sent (its lease then carries a fingerprint the guard knows it
    by), so that a SIGKILL before the answer does not leave the session to its lease.
    The created session is handed to the guard.

    Args:
        calls: How to call the API (task runs in a flow run, the client outside).
        report: Gets ``created_at`` (the create request) and the session's ID.
        guard: The process-death guard; told of the session once its ID is known.
        cancels_seen: Gets the cancels held back while the create ran, for the caller
            to deliver once teardown is in place.
        session_id: The ID the client chose (None: the service names the session).
        lease: The session's (rolling) lease.
        size: The session's size.
        models: Models to load, if any.

    Returns:
        The created session (status Starting).

    Raises:
        BaseException: Whatever ended the create (an ``ArrError``, ``TimeoutError``
            after :data:`CREATE_SHIELD_SECONDS`, a cancel of the create itself).
    """
    report.created_at = calls.arr.clock.time()
    # Where the service names the session, the guard is told the create is in flight
    # (and by which lease to know its session) before the request leaves.
    sent_lease = guard.expect_create(lease, size)

    async def create() -> Session:
        with anyio.fail_after(CREATE_SHIELD_SECONDS):
            return await calls.create(
                lease=sent_lease, size=size, models=models, session_id=session_id
            )

    try:
        # Once the request is out, learning the session's ID matters more than reacting
        # to a cancel a few seconds sooner: the cancel is held until the ID is known.
        session = await finish_despite_cancel(create(), cancels_seen)
    except BaseException:
        guard.create_failed()
        if session_id is not None:
            # The PUT may have reached the service: stopping an unknown ID is harmless.
            await stop_in_teardown(ClientCalls(calls.arr), session_id, report)
            if report.stop_error is None:
                guard.release(session_id)
        raise
    report.session_id = session.id
    guard.watch(session.id)
    return session
