"""``rendering_session`` with two doors: ``async with`` and ``with``, one teardown.

:func:`rendering_session` returns a :class:`RenderingSession`. ``async with`` delegates to
the async context manager :func:`arendering_session` (``arr_prefect.flows.session``).
``with`` (a ``def`` flow or task, a script) runs that same ``async with`` on the package's
event-loop thread (:mod:`arr_prefect._loop`), so there is one implementation of every
teardown layer:

- One *host* task on the loop enters ``async with arendering_session(...)`` (anyio cancel
  scopes must be entered and left by the same task), hands the Session to the calling
  thread, and waits for the body to finish. The body's exception, if any (a job error,
  the ``TimeoutError``/``CancelledError`` of a flow timeout, Prefect's
  ``TerminationSignal`` on SIGTERM or cancel, ``KeyboardInterrupt``), is raised inside the
  ``async with``, so teardown sees exactly what the async form sees, and ``__exit__``
  returns once teardown is done. An exception that reaches the calling thread while it
  waits for teardown (a second SIGTERM, a timeout) is held and raised after it, as
  ``finish_despite_cancel`` does for the async form.
- The rolling lease, the worker watchdog and the session guard run on the loop, so they
  go on while the body blocks (a body that sleeps past the lease keeps its session).
- A session lost while the body runs (Expired, Error, stopped elsewhere; the worker gone)
  ends the host's wait: teardown starts at once (it never waits for a blocking body), and
  the body's thread is interrupted with an exception sent to it
  (``PyThreadState_SetAsyncExc``). Python raises it **at the next bytecode the body's
  thread runs**: at once for Python code, when the call returns for a body inside one
  long C call (``time.sleep``, a socket read, a subprocess wait), within
  ``_loop.INTERRUPT_CHECK_SECONDS`` (0.1 s) for a body waiting on one of this package's
  sync calls. ``with`` then raises the specific ``SessionEndedError`` (or
  ``WorkerLostError``), as ``async with`` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import threading
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any

from arr_prefect import _loop
from arr_prefect.client import ArrClient
from arr_prefect.credentials import RemoteRenderingCredentials
from arr_prefect.flows.rendering import arendering_session
from arr_prefect.flows.report import SessionReport
from arr_prefect.models import Session, SessionSize
from arr_prefect.tasks._dual import called_from_sync, with_shared_client

__all__ = ["RenderingSession", "arendering_session", "rendering_session"]


class _SessionLost(BaseException):
    """Raised in a blocking body's thread when its session was lost; ``with`` replaces it
    by the real ``SessionEndedError``/``WorkerLostError``. A ``BaseException`` so that a
    body's ``except Exception`` does not swallow it (as for ``CancelledError``)."""

    def __str__(self) -> str:
        # Seen only if it lands on the first instruction of __exit__ (see there).
        return (
            "the session was lost while the `with rendering_session(...)` block ran, and is"
            " being stopped"
        )


def _send(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode (None: withdraw an
    exception sent but not raised yet). CPython takes a class here, not an instance."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc_type is None else ctypes.py_object(exc_type)
    )


class RenderingSession(AbstractAsyncContextManager[Session]):
    """What :func:`rendering_session` returns: use it once, as ``async with`` in async code
    or as ``with`` in sync code."""

    def __init__(self, size: SessionSize | str, **options: Any) -> None:
        self._size = size
        self._options = options
        self._async: AbstractAsyncContextManager[Session] | None = None
        # The sync door's state.
        self._lock = threading.Lock()
        self._thread_id = 0
        self._body_open = False
        self._interrupted = False
        self._entered: concurrent.futures.Future[Session] = concurrent.futures.Future()
        self._host: concurrent.futures.Future[BaseException | None] | None = None
        self._body: asyncio.Future[BaseException | None] | None = None

    # -- async with -------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        self._async = arendering_session(self._size, **self._options)
        return await self._async.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._async is not None, "__aexit__ without __aenter__"
        return await self._async.__aexit__(exc_type, exc, tb)

    # -- with -------------------------------------------------------------------------

    def __enter__(self) -> Session:
        if not called_from_sync():
            raise RuntimeError(
                "`with rendering_session(...)` would block the running event loop: in async"
                " code use `async with rendering_session(...)`"
            )
        if self._host is not None:
            raise RuntimeError("a rendering_session(...) can be entered only once")
        self._thread_id = threading.get_ident()
        self._host = _loop.run(with_shared_client(self._serve()))
        try:
            session = _loop.wait(self._entered)
        except BaseException as exc:
            failed = (
                self._entered.done()
                and not self._entered.cancelled()
                and self._entered.exception() is exc
            )
            if not failed:
                # Interrupted while the session was being provisioned (Ctrl-C, SIGTERM, a
                # timeout): cancel that, as a cancel of the async form would, and wait for
                # its teardown.
                if self._entered.done():
                    self._end_body(exc)
                else:
                    _loop.cancel_task(self._host)
            _, held = self._wait_for_host()
            if held:
                raise held[0] from exc
            raise
        with self._lock:
            self._body_open = True
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An interrupt sent in the body's last instructions is raised at the next point
        # where Python checks for one: here, or anywhere in _close_body (its first
        # instruction included). Caught here, it still becomes the real error. (One point
        # is out of reach: the first instruction of __exit__ itself. An interrupt raised
        # there leaves the with statement as _SessionLost; teardown runs all the same.)
        while True:
            try:
                interrupted = self._close_body()
                break
            except _SessionLost:
                continue  # raised here rather than in the body: it is over either way
        lost_here = isinstance(exc, _SessionLost)
        body_error = None if lost_here else exc
        saved_tb = exc.__traceback__ if exc is not None else None
        self._end_body(body_error)
        outcome, held = self._wait_for_host()
        if held:
            raise held[0]  # after teardown, as the async form re-raises a held cancel
        if outcome is None or (outcome is body_error and not interrupted):
            if exc is not None and saved_tb is not None:
                exc.__traceback__ = saved_tb  # without the loop thread's frames
            if lost_here:  # the host ended without a loss to report (should not happen)
                raise RuntimeError("the session's body was interrupted") from None
            return None  # the body's own exception, if any, goes on
        if interrupted and (exc is None or lost_here):
            raise outcome from None  # the real SessionEndedError, not our interrupt
        raise outcome

    # -- on the loop ------------------------------------------------------------------

    async def _serve(self) -> BaseException | None:
        """The host task: the whole ``async with``; returns how it ended (None: cleanly)."""
        try:
            async with arendering_session(self._size, **self._options) as session:
                self._body = asyncio.get_running_loop().create_future()
                self._entered.set_result(session)
                try:
                    outcome = await self._body
                except asyncio.CancelledError:
                    # Only the core cancels this wait: the session was lost (it raises the
                    # specific error once the cancel reaches it). Teardown starts now; the
                    # body is interrupted, not waited for.
                    self._interrupt_body()
                    raise
                if outcome is not None:
                    raise outcome  # inside the async with: teardown sees the body's error
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
            if not self._entered.done():
                self._entered.set_exception(exc)
            return exc
        return None

    def _interrupt_body(self) -> None:
        with self._lock:
            if not self._body_open or self._interrupted:
                return
            self._interrupted = True
            _send(self._thread_id, _SessionLost)

    # -- in the calling thread --------------------------------------------------------

    def _close_body(self) -> bool:
        """Mark the body over: no interrupt is sent after this, and one sent but not yet
        raised is withdrawn. True if the body was interrupted. Safe to call again if an
        interrupt is raised in it (``__exit__`` does)."""
        with self._lock:
            self._body_open = False
            interrupted = self._interrupted
        if interrupted:
            _send(self._thread_id, None)
        return interrupted

    def _end_body(self, outcome: BaseException | None) -> None:
        """Hand the body's outcome to the host task, which is waiting for it."""
        host_loop = _loop.loop()

        def resolve() -> None:
            if self._body is not None and not self._body.done():
                self._body.set_result(outcome)

        host_loop.call_soon_threadsafe(resolve)

    def _wait_for_host(self) -> tuple[BaseException | None, list[BaseException]]:
        """Wait until the host task (teardown included) is done, whatever arrives meanwhile:
        exceptions raised in this thread while waiting are held and returned."""
        assert self._host is not None
        held: list[BaseException] = []
        while not self._host.done():
            try:
                concurrent.futures.wait([self._host], timeout=_loop.INTERRUPT_CHECK_SECONDS)
            except _SessionLost:
                continue  # late: the host knows already
            except BaseException as exc:  # noqa: BLE001 - held until teardown is done
                held.append(exc)
        if self._host.cancelled():
            return None, held
        return self._host.result(), held


def rendering_session(
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
) -> RenderingSession:
    """Create a session, wait until Ready, keep its lease rolling, and always stop it; as
    ``with`` in sync code, ``async with`` in async code.

    ``lease`` is the rolling lease: the session never has more than that left, and the
    lease keeper renews it every ``renew_every`` (half of it by default) while the body
    runs; a killed worker leaks at most ``lease``. In any flow or task, or none::

        @flow
        def my_pipeline():
            with rendering_session("standard", lease=timedelta(minutes=10)) as session:
                render(session.hostname, session.handshake_port)

        @flow
        async def my_async_pipeline():
            async with rendering_session("standard", lease=timedelta(minutes=10)) as session:
                await render_async(session.hostname, session.handshake_port)

    The session is stopped when the body ends, raises, times out or is cancelled, and
    when waiting for Ready fails. If the session is lost while the body runs (expired,
    stopped elsewhere, Error; the worker gone), the body is interrupted and the specific
    ``SessionEndedError`` (``WorkerLostError``) raised: an ``async with`` body at its next
    ``await``; a ``with`` body at the next Python bytecode its thread runs (a body inside
    one long C call, such as ``time.sleep`` or a socket read, when that call returns). The
    session is stopped at once either way. Pass a :class:`SessionReport` to learn timings,
    renewals and who stopped it.

    ``with`` runs the async implementation (:func:`arendering_session`) on the package's
    event-loop thread, so every guarantee is the same; it refuses to run where it would
    block a running event loop (``RuntimeError``: use ``async with`` there). It works in a
    ``def`` flow, in ``def`` tasks (several at once under a thread pool, each its own
    session) and outside any flow run.

    In a flow run, a slot of the account's Prefect concurrency limit
    (``ARR_SESSION_LIMIT``) is taken before the create and given back after the stop, so a
    fleet never runs more sessions than the account allows
    (:mod:`arr_prefect.flows.quota`). The wait for a free slot counts against
    ``ready_timeout`` only with ``ready_timeout_includes_slot_wait=True``.

    The account: ``client`` if given, else
    ``credentials`` (a :class:`~arr_prefect.credentials.RemoteRenderingCredentials`; a
    saved one is recorded on the flow run by name, so the teardown hooks reach it from any
    process), else the ``ARR_*`` settings.

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

    Returns:
        A :class:`RenderingSession`: entered (once) with ``with`` or ``async with``, it
        gives the Ready session.

    Raises:
        RuntimeError: On entering with ``with`` where it would block a running event loop.
        InvalidLeaseError: On entering, a lease or renewal period out of bounds (before
            any session exists).
        SessionEndedError: The session ended in Error, expired or was stopped elsewhere,
            while waiting or while the body ran.
        ReadyTimeoutError: Not Ready within ``ready_timeout``.
        WorkerLostError: The Prefect worker that started this flow run is gone.
        ArrError: The create failed.
    """
    return RenderingSession(
        size,
        lease=lease,
        renew_every=renew_every,
        ready_timeout=ready_timeout,
        poll_interval=poll_interval,
        models=models,
        client=client,
        report=report,
        ready_timeout_includes_slot_wait=ready_timeout_includes_slot_wait,
        credentials=credentials,
    )
