"""Two doors to one async implementation: the sync form and the ``a``-prefixed async form.

Prefect 3's integrations offer each call in both forms (prefect-aws ``batch_submit`` /
``abatch_submit``). Here the plain name (``create_session``) is a :class:`DualTask`: called
from sync code (a ``def`` flow or task, a script) it runs the async task on the package's
event-loop thread (:mod:`arr_prefect._loop`) with the caller's context, so the task run
still belongs to the caller's flow run, and returns its value; called from async code it
returns the coroutine, exactly as an async Prefect task does, so ``await
create_session(...)`` works unchanged. The ``a`` name (``acreate_session``) is an
:class:`AsyncTask`: async code only, and a clear ``TypeError`` naming the sync form when
called from sync code (nothing is created, no coroutine is left behind).

The dispatch rule (:func:`called_from_sync`), in order:

1. on the package's loop thread: async (code there is async by construction);
2. in a Prefect task or flow run: async if that task or flow is ``async def`` *and* an
   event loop is running in this thread, else sync (a ``def`` task Prefect runs inside an
   async flow's thread cannot ``await``);
3. outside any run: async if an event loop is running in this thread, else sync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prefect import Task

from arr_prefect import _loop

__all__ = [
    "AsyncTask",
    "DualTask",
    "called_from_sync",
    "dual_task",
    "run_sync",
    "with_shared_client",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


# Prefect's own call, untyped: its overloads cannot be spelled for a generic subclass.
_task_call: Callable[..., Any] = Task.__call__


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def called_from_sync() -> bool:
    """True when the caller is sync code that wants a value, not a coroutine (see the
    module's dispatch rule)."""
    if _loop.in_loop_thread():
        return False
    running = _loop_running_here()
    from prefect.context import FlowRunContext, TaskRunContext

    task_run = TaskRunContext.get()
    if task_run is not None:
        return not (task_run.task.isasync and running)
    flow_run = FlowRunContext.get()
    if flow_run is not None and flow_run.flow is not None:
        return not (flow_run.flow.isasync and running)
    return not running


_shared_clients: dict[str, Any] = {}
_shared_lock: asyncio.Lock | None = None


async def with_shared_client(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` with one long-lived Prefect client for the package's loop in its
    context, as an async flow run has one for its loop.

    Without it, every task run and every Prefect API call made on the loop for a sync
    caller (whose own client context is a sync client, of no use on this loop) would
    build, open and version-check a client of its own: several times the cost of the
    work itself. One client per API URL, so a process that talks to several servers in
    turn (tests, scripts) reaches the right one.
    """
    from prefect.context import AsyncClientContext
    from prefect.settings import PREFECT_API_URL

    global _shared_lock
    loop = asyncio.get_running_loop()
    current = AsyncClientContext.get()
    if current is None or current.client.loop is not loop:
        key = str(PREFECT_API_URL.value() or "")
        if _shared_lock is None:
            _shared_lock = asyncio.Lock()
        async with _shared_lock:
            shared = _shared_clients.get(key)
            if shared is None or shared.client.loop is not loop:
                shared = AsyncClientContext()
                await shared.__aenter__()  # entered for the loop's lifetime
                _shared_clients[key] = shared
        AsyncClientContext.__var__.set(shared)  # in this task's copy of the context only
    return await coro


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the package's loop with this thread's context and return its value.

    If this thread is interrupted while waiting (Ctrl-C, SIGTERM, a Prefect timeout), the
    task on the loop is cancelled and, once it has unwound (its own cleanup, such as
    cancelling a deployment run, done), the interruption is raised; further interruptions
    arriving meanwhile are dropped in favour of the first.
    """
    future = _loop.run(with_shared_client(coro))
    try:
        return _loop.wait(future)
    except BaseException:
        if not future.done():
            _loop.cancel_task(future)
            _settle(future)
        raise


def _settle(future: concurrent.futures.Future[Any]) -> None:
    """Wait until ``future`` is done, whatever is raised in this thread meanwhile."""
    while not future.done():
        try:
            concurrent.futures.wait([future], timeout=_loop.INTERRUPT_CHECK_SECONDS)
        except BaseException:  # noqa: BLE001, S112 - the first interruption is the one raised
            continue


class DualTask(Task[P, R]):
    """A Prefect task of an ``async def`` usable from sync code (returns the value) and from
    async code (returns the awaitable, as any async task). ``.fn``, ``.submit``, ``.map``
    and ``.with_options`` (which keeps the class) behave as for any Prefect task."""

    # Hidden from type checkers, which see Task's typing: the awaitable (the async
    # shape, so existing async code type-checks unchanged).
    if not TYPE_CHECKING:

        def __call__(
            self,
            *args: Any,
            return_state: bool = False,
            wait_for: Any = None,
            **kwargs: Any,
        ) -> Any:
            if not called_from_sync():
                return _task_call(
                    self, *args, return_state=return_state, wait_for=wait_for, **kwargs
                )

            async def call() -> Any:
                # Task.__call__ of an async task returns the task engine's coroutine; made here,
                # on the loop, in the caller's context (so the run belongs to the caller's run).
                return await _task_call(
                    self, *args, return_state=return_state, wait_for=wait_for, **kwargs
                )

            return run_sync(call())

    task_options: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance by dual_task
    """The options the task was declared with (what its async form is declared with)."""

    def async_form(self) -> AsyncTask[P, R]:
        """The explicit async form of this task: the same function and options, callable
        from async code only (sync code gets a ``TypeError`` naming this form)."""
        explicit: AsyncTask[P, R] = AsyncTask(fn=self.fn, **self.task_options)
        explicit.sync_name = self.fn.__name__
        return explicit

    def with_options(self, **options: Any) -> DualTask[P, R]:
        """:meth:`prefect.Task.with_options`, keeping the dual form."""
        new = super().with_options(**options)
        new.__class__ = type(self)
        return new  # type: ignore[return-value]  # its class was just set


class AsyncTask(Task[P, R]):
    """The explicit async form of a :class:`DualTask`: ``await`` it in async code. Called
    from sync code it raises ``TypeError`` naming the sync form, before anything runs."""

    sync_name: str = ""
    """The name of the sync form, for the error message."""

    if not TYPE_CHECKING:

        def __call__(
            self,
            *args: Any,
            return_state: bool = False,
            wait_for: Any = None,
            **kwargs: Any,
        ) -> Any:
            if called_from_sync():
                raise TypeError(
                    f"a{self.sync_name} is the async form of {self.sync_name}: await it in"
                    f" async code; in sync code (a def flow or task, a script) call"
                    f" {self.sync_name}(...) instead, which returns the value"
                )
            return _task_call(self, *args, return_state=return_state, wait_for=wait_for, **kwargs)

    def with_options(self, **options: Any) -> AsyncTask[P, R]:
        """:meth:`prefect.Task.with_options`, keeping the async-only form."""
        new = super().with_options(**options)
        new.__class__ = type(self)
        new.sync_name = self.sync_name  # type: ignore[attr-defined]  # its class was just set
        return new  # type: ignore[return-value]  # its class was just set


def dual_task(
    **options: Any,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], DualTask[P, Coroutine[Any, Any, T]]]:
    """Decorate an ``async def`` as a :class:`DualTask` with Prefect's task ``options``;
    its explicit async form is then ``.async_form()``, with the same options (and so the
    same task-run names in the UI)."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> DualTask[P, Coroutine[Any, Any, T]]:
        dual = DualTask(fn=fn, **options)
        dual.task_options = options
        return dual

    return decorate
