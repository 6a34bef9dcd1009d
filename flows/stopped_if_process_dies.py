"""A session is stopped the moment its flow-run process dies, even by SIGKILL:
the hand-off to the session guard (:mod:`arr_prefect.guard`).

No ``finally`` runs in a killed process, and Prefect's crash hook starts seconds later in
a new one. In a flow-run process a worker started, each session is registered with a
small guard process as soon as its ID is known, and released once teardown has stopped
it; the guard stops whatever is still registered when the process dies.

Where the service names the session (v1), its ID is known only once the create answers:
the guard is first told the create is in flight, with the lease it asks for carrying a
random fingerprint in its microseconds (:meth:`ProcessGuard.expect_create`), and finds
the session by that lease if the process dies before the answer.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from arr_prefect.client import ArrClient
from arr_prefect.dialects.v1 import fingerprinted_lease
from arr_prefect.flows import worker_watchdog
from arr_prefect.flows.api_calls import client_chooses_session_id
from arr_prefect.flows.events import RunRef, current_run
from arr_prefect.guard import SessionGuard, session_guard
from arr_prefect.models import SessionSize

__all__ = ["ProcessGuard", "stopped_if_process_dies"]


def _guard_for(arr: ArrClient) -> SessionGuard | None:
    """The session guard, in a flow-run process a worker started (None elsewhere: in
    tests, in-process runs, with an injected transport another process cannot use)."""
    if worker_watchdog.WORKER_PID is None or not arr.settings.stop_on_process_death:
        return None
    if not arr.reaches_service_directly:
        return None
    return session_guard()


class ProcessGuard:
    """The sessions of one ``rendering_session`` as the guard knows them."""

    def __init__(self, guard: SessionGuard | None, arr: ArrClient, flow_run_id: str | None):
        self.guard = guard
        """None where no guard runs (see :func:`stopped_if_process_dies`)."""
        self.arr = arr
        self.flow_run_id = flow_run_id
        self._watched: set[str] = set()
        self._creating: str | None = None
        """The key of the create the guard was told is in flight, until it answers."""

    def _run(self) -> RunRef | None:
        """The flow run (and its flow and deployment) the guard's events relate to."""
        ref = current_run()
        if ref is None or ref.flow_run_id != self.flow_run_id:
            ref = RunRef(self.flow_run_id) if self.flow_run_id is not None else None
        return ref

    def expect_create(self, lease: timedelta, size: SessionSize) -> timedelta:
        """Tell the guard a create is about to be sent; return the lease to send.

        Where the service names the session (v1), the lease gets a fresh random
        fingerprint in its microseconds, and the guard is told it before the request
        leaves: if this process dies before the answer, the guard finds the session by
        that lease and stops it. Where the client names it, or no guard runs, the lease
        is returned as it is (the ID, if any, is watched already).

        Args:
            lease: The lease the create asks for.
            size: The session's size.

        Returns:
            The lease to send (``lease``, or ``lease`` fingerprinted).
        """
        if self.guard is None or client_chooses_session_id(self.arr):
            return lease
        # Not the client's RNG: a fingerprint another process cannot happen to share.
        sent = fingerprinted_lease(lease, secrets.randbelow(999_999) + 1)
        self._creating = uuid.uuid4().hex
        ref = self._run()
        self.guard.creating(
            self._creating,
            sent,
            size.value,
            self.arr.settings,
            self.flow_run_id,
            flow_run_name=ref.flow_run_name if ref is not None else None,
            flow_id=ref.flow_id if ref is not None else None,
            deployment_id=ref.deployment_id if ref is not None else None,
        )
        return sent

    def create_failed(self) -> None:
        """The create ended without an ID: the guard looks once, when this process exits,
        for a session it may have made (its outcome may be unknown)."""
        if self.guard is not None and self._creating is not None:
            self.guard.create_failed(self._creating)
            self._creating = None

    def watch(self, session_id: str) -> None:
        """Register the session with the guard, with the flow run (and its flow and
        deployment) that the guard's ``arr.session.stopped`` event is to be related to;
        a create in flight (:meth:`expect_create`) has answered with it."""
        if self.guard is None or session_id in self._watched:
            return
        self._watched.add(session_id)
        created, self._creating = self._creating, None
        ref = self._run()
        self.guard.watch(
            session_id,
            self.arr.settings,
            self.flow_run_id,
            flow_run_name=ref.flow_run_name if ref is not None else None,
            flow_id=ref.flow_id if ref is not None else None,
            deployment_id=ref.deployment_id if ref is not None else None,
            created=created,
        )

    def release(self, session_id: str) -> None:
        """Teardown stopped the session: the guard forgets it."""
        if self.guard is not None:
            self.guard.release(session_id)


def stopped_if_process_dies(
    arr: ArrClient, flow_run_id: str | None, session_id: str | None
) -> ProcessGuard:
    """Hand the session to the guard, so it is stopped if this process dies.

    Only in a flow-run process a worker started (``ARR_STOP_ON_PROCESS_DEATH``, on by
    default) and with a client that reaches the service itself: an in-process emulator
    cannot be reached from the guard's process.

    Args:
        arr: The session's client (its settings are handed to the guard).
        flow_run_id: The flow run the guard's event is to be related to.
        session_id: The ID the client chose, registered at once (None: the service names
            the session, registered once the create answers).

    Returns:
        The session's :class:`ProcessGuard` (a no-op where no guard runs).
    """
    guard = ProcessGuard(_guard_for(arr), arr, flow_run_id)
    if session_id is not None:
        guard.watch(session_id)
    return guard
