"""Provision a session for some work and guarantee it is stopped: the composition.

:func:`arendering_session` combines one small layer per guarantee, each in a module named
for what it guarantees (DESIGN.md, *Teardown, in depth*):

- :mod:`~arr_prefect.flows.within_quota`: the account's session cap holds across a fleet;
- :mod:`~arr_prefect.flows.owner_tags`: the session is recorded as the run's before
  anything can fail (the flow hooks, :mod:`~arr_prefect.flows.hooks`, and the reaper
  find it there); a session the client names has its tags written while the quota slot
  is sought, and announced as created once the slot is held;
- :mod:`~arr_prefect.flows.stopped_if_process_dies`: a SIGKILL of this process still
  stops it (the session guard);
- :mod:`~arr_prefect.flows.create_shielded`: once the create is sent, its ID is learnt;
- :mod:`~arr_prefect.flows.always_stopped`: a created session is stopped however the
  block ends;
- :mod:`~arr_prefect.flows.ready`: the body gets a Ready session or none;
- :mod:`~arr_prefect.flows.lease`: a killed worker leaks at most one lease;
- :mod:`~arr_prefect.flows.worker_watchdog`: a run whose worker is gone stops;
- :mod:`~arr_prefect.flows.body_loss`: a body whose session is lost ends with why.

How the API is called (task runs in a flow run, the client outside) is chosen once
(:mod:`~arr_prefect.flows.api_calls`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from arr_prefect.client import ArrClient
from arr_prefect.credentials import RemoteRenderingCredentials, open_client_for
from arr_prefect.flows.always_stopped import always_stopped
from arr_prefect.flows.api_calls import session_calls
from arr_prefect.flows.body_loss import BodyLoss, ends_with_the_loss
from arr_prefect.flows.cancel_shield import deliver_held_cancel
from arr_prefect.flows.create_shielded import create_shielded
from arr_prefect.flows.lease import LeaseKeeper, rolling_lease
from arr_prefect.flows.owner_tags import current_flow_run_id, owner_recorded, owner_tags_ahead
from arr_prefect.flows.ready import ready
from arr_prefect.flows.report import SessionReport, reported_if_ended_by_service
from arr_prefect.flows.stopped_if_process_dies import stopped_if_process_dies
from arr_prefect.flows.within_quota import within_quota
from arr_prefect.flows.worker_watchdog import stopped_if_worker_lost
from arr_prefect.models import Session, SessionSize, parse_lease

__all__ = ["arendering_session"]


# Over 80 lines only by its docstring (the user's guide, the teardown order, Args):
# the code is the signature and 40 lines of named layers.
@asynccontextmanager
async def arendering_session(
    size: SessionSize | str = SessionSize.STANDARD,
    *,
    lease: timedelta | str | int | float = timedelta(minutes=10),
    renew_every: timedelta | None = None,
    ready_timeout: float | None = None,
    poll_interval: float | None = None,
    models: list[str] | None = None,
    client: ArrClient | None = None,
    report: SessionReport | None = None,
    ready_timeout_includes_slot_wait: bool = False,
    credentials: RemoteRenderingCredentials | None = None,
) -> AsyncIterator[Session]:
    """Create a session, wait until Ready, keep its lease rolling, and always stop it.

    ``lease`` is the rolling lease: the session never has more than that left, and the
    :class:`LeaseKeeper` renews it every ``renew_every`` (half of it by default) while the
    body runs; a killed worker leaks at most ``lease``. Use inside any flow::

        @flow
        async def my_pipeline():
            async with rendering_session("standard", lease=timedelta(minutes=10)) as session:
                await render(session.hostname, session.handshake_port)

    The session is stopped when the body ends, raises, times out or is cancelled, and when
    waiting for Ready fails. If the session is lost while the body runs (expired, stopped
    elsewhere, Error), the body is cancelled and the specific ``SessionEndedError`` raised.
    Pass a :class:`SessionReport` to learn timings, renewals and who stopped it.

    In a flow run, a slot of the account's Prefect concurrency limit (``ARR_SESSION_LIMIT``)
    is taken before the create and given back after the stop, so a fleet never runs more
    sessions than the account allows (:mod:`arr_prefect.flows.quota`). The wait for a free
    slot is logged and shown as an artifact; it counts against ``ready_timeout`` only with
    ``ready_timeout_includes_slot_wait=True``.

    The account: ``client`` if given, else ``credentials`` (a
    :class:`~arr_prefect.credentials.RemoteRenderingCredentials`; a saved one is recorded
    on the flow run by name, so the teardown hooks reach it from any process), else the
    ``ARR_*`` settings.

    Teardown, in this order (each step the exit of one layer, innermost first):

    1. a loss of the session while the body ran is raised as its error
       (``SessionEndedError``, ``WorkerLostError``) instead of the cancel that ended the
       body (:mod:`~arr_prefect.flows.body_loss`);
    2. a session the service ended is reported: ``arr.session.failed`` or
       ``arr.session.expired`` (:func:`~arr_prefect.flows.report.reported_if_ended_by_service`);
    3. the worker watchdog stops (:mod:`~arr_prefect.flows.worker_watchdog`);
    4. the lease keeper stops (:mod:`~arr_prefect.flows.lease`);
    5. the session is stopped, shielded from cancellation and bounded in time; once it is
       down, the credentials kept here for the hooks are forgotten, the guard releases it,
       its final status is read and ``arr.session.stopped`` emitted; then the summary is
       logged (:mod:`~arr_prefect.flows.always_stopped`);
    6. owner tags not written yet get a last chance (:mod:`~arr_prefect.flows.owner_tags`);
    7. the quota slot is given back (:mod:`~arr_prefect.flows.within_quota`);
    8. the client is closed.

    A cancel that arrives while the create or the stop runs is held, and reaches the
    caller after the last step. When waiting for Ready fails, step 2 happens in the wait,
    then 5 to 8. When a create fails after the client named the session, that ID is
    stopped (and released by the guard), then 7 and 8.

    Args:
        size: The session's size (``standard``, ``premium``).
        lease: The rolling lease (``timedelta``, TimeSpan string or minutes).
        renew_every: How often the lease is renewed (default: half of it).
        ready_timeout: Seconds to wait for Ready (default ``ARR_READY_TIMEOUT``).
        poll_interval: Seconds between polls while waiting (default ``ARR_POLL_INTERVAL``).
        models: Models to load into the session, if any.
        client: The client to use (wins over ``credentials``).
        report: Filled as the session goes: timings, renewals, who stopped it.
        ready_timeout_includes_slot_wait: Whether waiting for a quota slot counts
            against ``ready_timeout``.
        credentials: The account when no ``client`` is given (None: ``ARR_*``).

    Yields:
        The session, Ready.

    Raises:
        InvalidLeaseError: A lease or renewal period out of bounds (before any session).
        SessionEndedError: The session ended in Error, expired or was stopped elsewhere,
            while waiting or while the body ran.
        ReadyTimeoutError: Not Ready within ``ready_timeout``.
        WorkerLostError: The Prefect worker that started this flow run is gone.
        SlotWaitTimeoutError: No quota slot within the ready timeout (when it counts).
        ArrError: The create failed.
    """
    report = report if report is not None else SessionReport()
    rolling = parse_lease(lease)
    session_size = SessionSize.parse(size)
    LeaseKeeper.renewal_period(rolling, renew_every)  # refuse a bad period before creating
    flow_run_id = current_flow_run_id()
    # What made the session, for the hooks: not the credentials when a client overrides them.
    made_with = credentials if client is None else None
    cancels_seen: list[BaseException] = []
    async with AsyncExitStack() as layers:
        enter = layers.enter_async_context
        arr = await enter(open_client_for(credentials, client))
        calls = session_calls(arr, in_flow_run=flow_run_id is not None)
        ahead = await enter(owner_tags_ahead(arr, flow_run_id, made_with))
        ready_timeout = await enter(
            within_quota(
                arr, flow_run_id, report, ready_timeout, counts=ready_timeout_includes_slot_wait
            )
        )
        _describe(report, arr, session_size)
        owner = await enter(
            owner_recorded(
                arr, flow_run_id, report, made_with, size=session_size, lease=rolling, ahead=ahead
            )
        )
        guard = stopped_if_process_dies(arr, flow_run_id, owner.session_id)
        session = await create_shielded(
            calls, report, guard, cancels_seen, owner.session_id, rolling, session_size, models
        )
        released = (owner.forget, guard.release)
        await enter(always_stopped(calls, session.id, report, flow_run_id, cancels_seen, released))
        deliver_held_cancel(cancels_seen)  # held back during the create: it now stops it
        await owner.record_created(session.id)
        session = await ready(
            calls, session, report, flow_run_id, timeout=ready_timeout, poll_interval=poll_interval
        )
        loss = BodyLoss(session.id)
        await enter(
            rolling_lease(arr, session, report, flow_run_id, rolling, renew_every, loss.notice)
        )
        await enter(stopped_if_worker_lost(arr, session.id, loss.notice))
        await enter(reported_if_ended_by_service(report, session.id, flow_run_id, arr.clock))
        await enter(ends_with_the_loss(loss))
        yield session


def _describe(report: SessionReport, arr: ArrClient, size: SessionSize) -> None:
    """What the report knows before the create: the size, the API, the price."""
    report.size = size.value
    report.api_version = arr.api_version
    report.price_per_hour = arr.settings.price_per_hour(size.value)
    report.currency = arr.settings.price_currency
