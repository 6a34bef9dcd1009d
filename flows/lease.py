"""A killed worker leaks at most one lease: the rolling lease (:class:`LeaseKeeper`,
:func:`rolling_lease`).

The session is created with a short lease and renewed ahead of expiry while the work
runs, so if everything else dies the service itself ends the session within one renewal
period. The value sent is the *total* lease since Ready, not an increment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from arr_prefect.client import ArrClient
from arr_prefect.clock import Clock
from arr_prefect.credentials import RemoteRenderingCredentials, open_client_for
from arr_prefect.errors import (
    InvalidLeaseError,
    SessionEndedError,
    SessionExpiredError,
    SessionNotFoundError,
)
from arr_prefect.flows.cancel_shield import finish_despite_cancel
from arr_prefect.flows.events import emit_session_event
from arr_prefect.flows.report import SessionReport
from arr_prefect.models import MAX_LEASE, Session, parse_lease
from arr_prefect.tasks.sessions import run_logger
from arr_prefect.units import format_duration

__all__ = ["LeaseKeeper", "rolling_lease"]


class LeaseKeeper:
    """Keeps a session on a short rolling lease while work runs.

    Every ``renew_every`` (half the ``lease`` by default) it makes the lease end ``lease``
    from now, sending the *total* since Ready (``elapsed + lease``: the API takes the total,
    not an increment). If the worker dies, the service ends the session within ``lease``.
    Renewal failures are retried sooner; if the session is found over (expired, stopped,
    Error) ``on_lost`` is called with the error and the keeper ends.

    The account: ``client`` if given, else ``credentials`` (a
    :class:`~arr_prefect.credentials.RemoteRenderingCredentials`), else ``ARR_*``; without
    a client the keeper opens its own while it runs::

        async with LeaseKeeper(session_id=session.id, lease=lease, credentials=credentials):
            await render(session)

    Args:
        client: The client to renew with (None: one is opened while the keeper runs).
        session_id: The session to keep (required).
        lease: The rolling lease: how long the session has left after each renewal.
        renew_every: How often to renew (default: half the lease).
        on_lost: Called with the error once the session is found over.
        on_renewed: Called with the session and the renewal count after each renewal.
        credentials: The account when no ``client`` is given (None: ``ARR_*``).

    Raises:
        TypeError: Without a ``session_id``.
        InvalidLeaseError: A lease or period out of bounds.
    """

    def __init__(
        self,
        client: ArrClient | None = None,
        session_id: str | None = None,
        *,
        lease: timedelta,
        renew_every: timedelta | None = None,
        on_lost: Callable[[SessionEndedError], None] | None = None,
        on_renewed: Callable[[Session, int], None] | None = None,
        credentials: RemoteRenderingCredentials | None = None,
    ) -> None:
        if session_id is None:
            raise TypeError("LeaseKeeper needs the session_id of the session to keep")
        self.client = client
        self.credentials = credentials
        self._arr: ArrClient | None = None
        self.session_id = session_id
        self.lease = parse_lease(lease)
        self.renew_every = self.renewal_period(self.lease, renew_every)
        self.on_lost = on_lost
        self.on_renewed = on_renewed
        self.renewals = 0
        self.failures = 0
        self.lost: SessionEndedError | None = None
        self._task: asyncio.Task[None] | None = None
        self._at_max = False
        self._last_lease: timedelta | None = None

    async def __aenter__(self) -> LeaseKeeper:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @staticmethod
    def renewal_period(lease: timedelta, renew_every: timedelta | None = None) -> timedelta:
        """How often to renew: ``renew_every``, or half the lease.

        Args:
            lease: The rolling lease.
            renew_every: The period asked for (None: half the lease).

        Returns:
            The renewal period.

        Raises:
            InvalidLeaseError: The period is not positive or not shorter than the lease.
        """
        period = renew_every if renew_every is not None else lease / 2
        if not timedelta(0) < period < lease:
            raise InvalidLeaseError("renew_every must be positive and shorter than the lease")
        return period

    def start(self, current_lease: timedelta | None = None) -> None:
        """Start renewing in the background.

        Args:
            current_lease: The lease the session has now (a renewal is counted when the
                lease the service answers differs from it).
        """
        self._last_lease = current_lease
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"lease-keeper-{self.session_id}"
            )

    async def stop(self) -> None:
        """Stop renewing (the session itself is left alone)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            await finish_despite_cancel(asyncio.gather(task, return_exceptions=True))
        elif not task.cancelled() and task.exception() is not None:
            run_logger().error("Lease keeper had died: %r", task.exception())

    async def renew(self) -> Session:
        """Renew once: make the lease end ``lease`` from now (nothing sent if it already does).

        Returns:
            The session as the service describes it after the renewal.

        Raises:
            ArrError: The renewal failed (``SessionEndedError`` when the session is over).
        """
        if self._arr is not None:
            return await self._renew_with(self._arr)
        async with open_client_for(self.credentials, self.client) as arr:
            return await self._renew_with(arr)

    async def _renew_with(self, arr: ArrClient) -> Session:
        after = await arr.extend_session_by(self.session_id, self.lease)
        renewed = self._last_lease is not None and after.max_lease != self._last_lease
        if renewed:
            self.renewals += 1
        self._last_lease = after.max_lease
        if renewed and self.on_renewed is not None:
            self.on_renewed(after, self.renewals)
        if after.max_lease is not None and after.max_lease >= MAX_LEASE and not self._at_max:
            self._at_max = True
            run_logger().warning(
                "Session %s reached the 24 h maximum lease; it will expire at that limit",
                self.session_id,
            )
        return after

    async def _run(self) -> None:
        async with open_client_for(self.credentials, self.client) as arr:
            self._arr = arr
            try:
                await self._keep(arr.clock)
            finally:
                self._arr = None

    async def _keep(self, clock: Clock) -> None:
        delay = self.renew_every.total_seconds()
        logger = run_logger()
        while True:
            await clock.sleep(delay)
            try:
                session = await self.renew()
            except (SessionEndedError, SessionNotFoundError) as exc:
                lost = (
                    exc
                    if isinstance(exc, SessionEndedError)
                    else SessionExpiredError(
                        f"session {self.session_id} is gone: {exc}", session_id=self.session_id
                    )
                )
                self.lost = lost
                logger.error("Lease keeper: %s", lost)
                if self.on_lost is not None:
                    self.on_lost(lost)
                return
            except Exception as exc:  # noqa: BLE001 - a keeper that dies lets the lease run out
                self.failures += 1
                delay = max(1.0, self.renew_every.total_seconds() / 4)
                logger.warning(
                    "Lease keeper: renewing session %s failed (%s); retrying in %s",
                    self.session_id,
                    exc,
                    format_duration(delay),
                )
                continue
            delay = self.renew_every.total_seconds()
            logger.debug(
                "Lease keeper: session %s lease %s, elapsed %s",
                self.session_id,
                format_duration(
                    None if session.max_lease is None else session.max_lease.total_seconds()
                ),
                format_duration(
                    None if session.elapsed is None else session.elapsed.total_seconds()
                ),
            )


@asynccontextmanager
async def rolling_lease(
    arr: ArrClient,
    session: Session,
    report: SessionReport,
    flow_run_id: str | None,
    lease: timedelta,
    renew_every: timedelta | None,
    on_lost: Callable[[SessionEndedError], None],
) -> AsyncIterator[LeaseKeeper]:
    """Keep the Ready session's lease rolling while the block runs.

    Each renewal emits ``arr.session.lease-renewed``; the count ends up in
    ``report.lease_renewals`` once the keeper has stopped.

    Args:
        arr: The session's client.
        session: The session, Ready (its current lease is where renewals count from).
        report: The session's report.
        flow_run_id: The flow run the events are related to (None outside one).
        lease: The rolling lease.
        renew_every: How often to renew (None: half the lease).
        on_lost: Called once if the session is found over (expired, stopped elsewhere,
            Error); it is expected to end the block.

    Yields:
        The running :class:`LeaseKeeper`.
    """

    def on_renewed(renewed: Session, renewals: int) -> None:
        emit_session_event(
            "arr.session.lease-renewed",
            renewed.id,
            flow_run_id,
            report.payload(
                arr.clock.time(), lease_seconds=lease.total_seconds(), renewals=renewals
            ),
        )

    keeper = LeaseKeeper(
        arr,
        session.id,
        lease=lease,
        renew_every=renew_every,
        on_lost=on_lost,
        on_renewed=on_renewed,
    )
    keeper.start(session.max_lease)
    try:
        yield keeper
    finally:
        await keeper.stop()
        report.lease_renewals = keeper.renewals
