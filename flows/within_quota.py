"""A fleet never runs more sessions than the account allows: :func:`within_quota`.

In a flow run, a slot of the account's Prefect global concurrency limit
(``ARR_SESSION_LIMIT``) is taken before the create and given back after the stop
(:mod:`arr_prefect.flows.quota`). The wait for a free slot is logged and shown as an
artifact; it counts against the ready timeout only when asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arr_prefect.client import ArrClient
from arr_prefect.flows.quota import session_limit_name, session_slot
from arr_prefect.flows.report import SessionReport

__all__ = ["within_quota"]


@asynccontextmanager
async def within_quota(
    arr: ArrClient,
    flow_run_id: str | None,
    report: SessionReport,
    ready_timeout: float | None,
    *,
    counts: bool,
) -> AsyncIterator[float | None]:
    """Hold the account's session slot for one session, taken before it exists.

    No slot is taken outside a flow run (there is no server to keep the count) or when
    ``ARR_SESSION_LIMIT`` is empty.

    Args:
        arr: The session's client (its settings name the limit; its clock times the wait).
        flow_run_id: The flow run holding the slot (None: no quota).
        report: Gets ``slot_limit`` and ``slot_wait_seconds`` when a limit is enforced.
        ready_timeout: The ready timeout asked for (None: ``ARR_READY_TIMEOUT``).
        counts: Whether the wait for a slot counts against the ready timeout.

    Yields:
        The ready timeout the wait for Ready may use: ``ready_timeout``, or what is left
        of it after the slot wait when that counts.

    Raises:
        SlotWaitTimeoutError: No slot came free within the ready timeout (only when the
            wait counts against it).
    """
    settings = arr.settings
    name = session_limit_name(settings.session_limit, settings.account_id)
    budget = ready_timeout if ready_timeout is not None else settings.ready_timeout
    started = arr.clock.time()
    async with session_slot(
        name if settings.session_limit.strip() else None,
        lease_seconds=settings.session_slot_lease_seconds,
        flow_run_id=flow_run_id,
        deadline=started + budget if counts else None,
        deadline_clock=arr.clock.time,
        timeout_reason=f", and the wait counts against the ready timeout of {budget:.0f} s",
    ) as slot:
        if slot is not None:
            slot.ready_timeout_left = max(0.0, budget - (arr.clock.time() - started))
            report.slot_limit = slot.limit_name if slot.enforced else None
            report.slot_wait_seconds = slot.waited_seconds if slot.enforced else None
            if counts and slot.wait is not None:
                ready_timeout = slot.ready_timeout_left
        yield ready_timeout
