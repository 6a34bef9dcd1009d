"""The package's event-loop thread: where synchronous callers' async work runs.

The sync forms (``create_session(...)`` in a ``def`` flow, ``with rendering_session(...)``)
drive the same async code as the async forms, on one event loop that this module owns: a
daemon thread started on first use and shared by every thread of the process. Prefect's
own sync client does the same (its "global loop"); a loop of our own keeps the package's
connection pools and token fetches in one place, and its behaviour in our hands.

A coroutine runs there as a task created with the *caller's* context variables
(:func:`contextvars.copy_context` taken in the calling thread), so Prefect's
``FlowRunContext``/``TaskRunContext`` and run logger see the caller's flow or task run:
task runs started there appear in the caller's run.

No Prefect in here (core layer).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["cancel_task", "in_loop_thread", "loop", "run", "wait"]

T = TypeVar("T")

THREAD_NAME = "arr-prefect-loop"

INTERRUPT_CHECK_SECONDS = 0.1
"""How long :func:`wait` blocks at a time. A thread blocked in a lock wait cannot be
interrupted by an exception sent to it (``PyThreadState_SetAsyncExc``: how Prefect times
out a sync task outside the main thread); waiting in short slices lets it arrive."""

SHUTDOWN_SECONDS = 5.0
"""At interpreter exit, how long tasks still running on the loop get to finish once
cancelled (and, again, the connection pools to close)."""


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                started = threading.Event()
                new_loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(new_loop, started), name=THREAD_NAME, daemon=True
                )
                thread.start()
                started.wait()
                self._loop, self._thread = new_loop, thread
            return self._loop

    @staticmethod
    def _serve(new_loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(new_loop)
        new_loop.call_soon(started.set)
        try:
            new_loop.run_forever()
        finally:
            try:
                # As asyncio.run ends: what still runs (a session whose daemon-thread body
                # outlived the interpreter's main thread) is cancelled and given a bounded
                # moment for its teardown; then the connection pools close.
                pending = [t for t in asyncio.all_tasks(new_loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    new_loop.run_until_complete(asyncio.wait(pending, timeout=SHUTDOWN_SECONDS))
                new_loop.run_until_complete(new_loop.shutdown_asyncgens())
            finally:
                new_loop.close()

    def is_current(self) -> bool:
        thread = self._thread
        return thread is not None and thread.ident == threading.get_ident()

    def shutdown(self) -> None:
        """Stop the loop, letting it close the connection pools (bounded)."""
        with self._lock:
            running, thread = self._loop, self._thread
            self._loop = self._thread = None
        if running is None or thread is None or not thread.is_alive():
            return
        running.call_soon_threadsafe(running.stop)
        thread.join(2 * SHUTDOWN_SECONDS)

    def forget(self) -> None:
        """After a fork: the child has no loop thread (only the forking thread survives)."""
        self._lock = threading.Lock()
        self._loop = self._thread = None


_LOOP = _LoopThread()
atexit.register(_LOOP.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LOOP.forget)


def loop() -> asyncio.AbstractEventLoop:
    """The package's event loop (its thread is started on first use; thread-safe)."""
    return _LOOP.get()


def in_loop_thread() -> bool:
    """True in the package's event-loop thread (code there must not block on it)."""
    return _LOOP.is_current()


class _TaskFuture(concurrent.futures.Future[T]):
    """A future of a task on the package's loop, which knows its task (for cancelling)."""

    task: asyncio.Task[T] | None = None


def run(
    coro: Coroutine[Any, Any, T], context: contextvars.Context | None = None
) -> concurrent.futures.Future[T]:
    """Run ``coro`` on the package's loop as a task in ``context`` (default: a copy of the
    calling thread's context variables); return a future of its outcome.

    :func:`cancel_task` cancels the task. Never block on the future from the loop's own
    thread (:func:`in_loop_thread`): that would deadlock.
    """
    ctx = context if context is not None else contextvars.copy_context()
    target = loop()
    future: _TaskFuture[T] = _TaskFuture()

    def start() -> None:
        if not future.set_running_or_notify_cancel():
            coro.close()  # cancelled before it started: nothing ran
            return
        task = future.task = target.create_task(coro, context=ctx)

        def settle(done: asyncio.Task[T]) -> None:
            if done.cancelled():
                future.set_exception(concurrent.futures.CancelledError())
            elif (exc := done.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result())

        task.add_done_callback(settle)

    target.call_soon_threadsafe(start)
    return future


def cancel_task(future: concurrent.futures.Future[Any]) -> None:
    """Cancel the task behind a :func:`run` future: at once if it has not started (its
    coroutine is closed unrun), else the task is cancelled on the loop and unwinds there
    (the future settles when it has)."""
    if future.cancel():
        return

    def cancel() -> None:
        # Runs after run's start() (the loop runs callbacks in order), so the task is set.
        task = getattr(future, "task", None)
        if task is not None:
            task.cancel()

    loop().call_soon_threadsafe(cancel)


def wait(future: concurrent.futures.Future[T]) -> T:
    """The future's result, blocking this thread in short slices so that an exception sent
    to it (a Prefect timeout outside the main thread) is raised here within
    :data:`INTERRUPT_CHECK_SECONDS`. Signals (Ctrl-C, SIGTERM, a flow timeout's SIGALRM)
    interrupt the wait in the main thread at once."""
    while True:
        try:
            return future.result(timeout=INTERRUPT_CHECK_SECONDS)
        except concurrent.futures.TimeoutError:
            continue
