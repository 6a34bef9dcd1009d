"""Keep Prefect's two false alarms out of a render-batch run's log after a cancel.

Cancelling an async flow run from the UI under a Prefect 3.9.1 worker makes Prefect itself
log two records that say something false; a plain ``async`` flow with no arr_prefect code
logs the same two (the docs, *What a run shows*). How they come about, in
``site-packages/prefect``:

1. The worker commits a "cancel" intent on its control channel, then sends SIGTERM.
   ``engine.py`` runs an async flow with ``asyncio.run`` on the main thread
   (``_drive_run_flow_result``), and ``utilities/engine/__init__.py``'s
   ``_prefect_sigterm_handler`` raises ``TerminationSignal``. An idle event loop waits in
   ``select``, outside the flow's task, so the exception leaves ``run_until_complete``
   with that task still pending. ``asyncio.run``'s shutdown then cancels the task: our
   teardown runs there (the session is stopped) and the engine turns the CancelledError
   into a TerminationSignal (``flow_engine.py``, ``initialize_run``:
   ``raise TerminationSignal(signal.SIGTERM) from exc``). asyncio logs a task that ends
   with an exception during that shutdown: ``ERROR asyncio - unhandled exception during
   asyncio.run() shutdown`` with both tracebacks, in the worker's log. Prefect means a
   cancel to end quietly: ``run_flow`` does not log a control termination ("just
   noisy"), ``handle_engine_signals`` logs "was terminated" at INFO and exits 0; this
   record escapes because the async flow's coroutine runs after ``run_flow`` returned.
2. Under a worker the runner owns the Cancelled state
   (``PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS=false``), so ``handle_cancellation``
   proposes none and the engine's copy of the state stays Running; the ``finally`` of
   ``initialize_run`` then logs ``ERROR Finished in state Running()`` (ERROR for any
   state but Completed). The worker sets Cancelled seconds later, once the process exited.

Neither can be fixed from outside Prefect short of replacing its SIGTERM handler or its
engine. :func:`drop_after_prefect_cancel` drops exactly these two records, and only in a
process whose render-batch run has confirmed from the Prefect API that it was cancelled
there and has logged its own summary line (who cancelled, the session, the layer that
stopped it, how fast). A crash (SIGTERM without a cancel) and a timeout keep every line.
"""

from __future__ import annotations

import logging

from prefect.exceptions import TerminationSignal

__all__ = ["drop_after_prefect_cancel"]

FLOW_RUN_LOGGER = "prefect.flow_runs"
STALE_FINISH = "Finished in state Running()"
ASYNCIO_SHUTDOWN = "unhandled exception during asyncio.run() shutdown"

_cancelled_runs: set[str] = set()


class _AfterPrefectCancel(logging.Filter):
    """Drops the two records above for a flow run in ``_cancelled_runs``; passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _cancelled_runs:
            return True
        if record.name == FLOW_RUN_LOGGER:
            return not (
                record.levelno >= logging.ERROR
                and getattr(record, "flow_run_id", None) in _cancelled_runs
                and record.getMessage() == STALE_FINISH
            )
        if record.name == "asyncio":
            exc = record.exc_info[1] if record.exc_info else None
            return not (
                isinstance(exc, TerminationSignal)
                and record.getMessage().startswith(ASYNCIO_SHUTDOWN)
            )
        return True


_filter = _AfterPrefectCancel()


def drop_after_prefect_cancel(flow_run_id: str) -> None:
    """Drop Prefect's stale ``Finished in state Running()`` of this run and asyncio's
    shutdown traceback of its TerminationSignal: call once the run knows it was cancelled
    from the Prefect UI or API and has said so in its log."""
    _cancelled_runs.add(flow_run_id)
    for name in (FLOW_RUN_LOGGER, "asyncio"):
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
