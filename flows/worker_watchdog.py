"""A flow run whose Prefect worker is gone stops its job and its session:
:func:`stopped_if_worker_lost`.

A flow-run process whose worker was killed lives on as an orphan that nobody can cancel
(Prefect delivers a cancel through the worker) while its lease keeper goes on renewing
the lease. When the process that started the flow run is gone, the body is stopped with
:class:`WorkerLostError` and the session with it.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from arr_prefect.client import ArrClient

__all__ = ["WORKER_CHECK_SECONDS", "WORKER_PID", "WorkerLostError", "stopped_if_worker_lost"]

# How often a flow run started by a worker checks that the worker is still there.
WORKER_CHECK_SECONDS = 1.0


def starting_worker_pid() -> int | None:
    """The PID of the Prefect worker (or runner) that started this flow-run process.

    A worker starts each flow run as its own child with ``PREFECT__FLOW_RUN_ID`` in the
    environment; read at import, which happens as the run loads its flow. None when the
    process was not started that way (in-process runs, tests, a container's PID 1).
    """
    if not os.environ.get("PREFECT__FLOW_RUN_ID"):
        return None
    parent = os.getppid()
    return parent if parent > 1 else None


WORKER_PID = starting_worker_pid()
"""The worker that started this flow-run process (None: not started by one). Read when a
session starts, by this watchdog and by the session guard's hand-off."""


class WorkerLostError(RuntimeError):
    """The Prefect worker that started this flow run is gone: the run can no longer be
    cancelled or watched, so its job is stopped and its session with it."""


def _silence_orphaned_output() -> None:
    """Point stdout/stderr at /dev/null if they are pipes: their reader, the worker, is dead.

    Otherwise the next log line hits a broken pipe, and Prefect's (rich) console handler
    answers that with ``SystemExit(1)`` wherever the line was logged, teardown included.
    """
    with open(os.devnull, "wb") as devnull:
        for fd in (1, 2):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.dup2(devnull.fileno(), fd)
            except OSError:
                continue


def _parent_pid() -> int:
    """This process's parent (the watchdog's one probe, replaceable in tests)."""
    return os.getppid()


async def _watch_worker(worker_pid: int, on_lost: Callable[[WorkerLostError], None]) -> None:
    """Call ``on_lost`` once this process's parent is no longer ``worker_pid``.

    An orphan is re-parented (to init or a subreaper), so a changed parent PID means the
    worker died. Real time, not the session clock: it watches a local process.
    """
    while True:
        parent = _parent_pid()
        if parent != worker_pid:
            _silence_orphaned_output()
            on_lost(
                WorkerLostError(
                    f"the Prefect worker (pid {worker_pid}) that started this flow run is"
                    f" gone (parent is now pid {parent}); nobody can cancel this run any"
                    " more, so its job and session are stopped"
                )
            )
            return
        await asyncio.sleep(WORKER_CHECK_SECONDS)


@asynccontextmanager
async def stopped_if_worker_lost(
    arr: ArrClient, session_id: str, on_lost: Callable[[WorkerLostError], None]
) -> AsyncIterator[None]:
    """Watch the worker that started this flow run while the block runs.

    Only in a flow-run process a worker started, and with ``ARR_STOP_ON_WORKER_LOSS``
    (on by default); elsewhere the block just runs.

    Args:
        arr: The session's client (for its settings).
        session_id: The session, to name the watchdog task.
        on_lost: Called once with a :class:`WorkerLostError` if the worker goes; it is
            expected to end the block (``rendering_session`` cancels the body).

    Yields:
        Nothing: the block runs as it is.
    """
    watchdog: asyncio.Task[None] | None = None
    if WORKER_PID is not None and arr.settings.stop_on_worker_loss:
        watchdog = asyncio.get_running_loop().create_task(
            _watch_worker(WORKER_PID, on_lost), name=f"worker-watchdog-{session_id}"
        )
    try:
        yield
    finally:
        if watchdog is not None:
            watchdog.cancel()
