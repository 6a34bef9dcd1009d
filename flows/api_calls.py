"""How ``rendering_session`` calls the session API: through Prefect tasks in a flow run,
through the client outside one, chosen once (:func:`session_calls`).

In a flow run each step shows in the Prefect UI as a task run of its own
(``create-session``, ``wait-until-ready`` with its progress artifact, ``stop-session``);
outside one there is no run to show them in and the client is called directly. Every
call ``rendering_session`` makes to a Prefect task is in this module, and so is the one
place where the API version changes a step of the lifecycle
(:func:`client_chooses_session_id`).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from arr_prefect import tasks
from arr_prefect.client import ArrClient, new_session_id
from arr_prefect.errors import ArrError
from arr_prefect.flows.progress import ProgressArtifact, ready_wait_progress
from arr_prefect.models import Session, SessionSize
from arr_prefect.tasks.sessions import run_logger

__all__ = [
    "ClientCalls",
    "TaskCalls",
    "chosen_session_id",
    "client_chooses_session_id",
    "session_calls",
]


def client_chooses_session_id(arr: ArrClient) -> bool:
    """True when the client names a new session (2021-01-01: ``PUT /sessions/{id}``);
    False when the service does (v1: ``POST /sessions/create``, the ID is in the answer).

    A session the client names is recorded, and guarded, before its create is even sent.
    The API version's dialect says which (:mod:`arr_prefect.dialects`).
    """
    return arr.dialect.client_chooses_session_id


def chosen_session_id(arr: ArrClient, flow_run_id: str | None) -> str | None:
    """A fresh ID for the next session, when the client names it (None: the service does).

    Prefixed ``pf-<flow run id>`` inside a flow run, so the ID alone names its owner.
    """
    if not client_chooses_session_id(arr):
        return None
    return new_session_id(f"pf-{flow_run_id}" if flow_run_id else "arr")


@dataclass(frozen=True)
class ClientCalls:
    """The session API through the client: for code outside a flow run."""

    arr: ArrClient

    async def create(
        self,
        *,
        lease: timedelta,
        size: SessionSize,
        models: list[str] | None,
        session_id: str | None,
    ) -> Session:
        """Create the session (``session_id``: the ID the client chose, if it did)."""
        return await self.arr.create_session(
            lease=lease, size=size, models=models or (), session_id=session_id
        )

    def ready_wait_progress(
        self, session_id: str, created_at: float, timeout: float | None
    ) -> AbstractAsyncContextManager[ProgressArtifact | None]:
        """Where the wait for Ready shows its progress: nowhere outside a flow run."""
        return contextlib.nullcontext(None)

    async def wait_until_ready(
        self,
        session_id: str,
        *,
        timeout: float | None,
        poll_interval: float | None,
        created_at: float,
    ) -> Session:
        """Wait until the session is Ready."""
        return await self.arr.wait_until_ready(
            session_id, timeout=timeout, poll_interval=poll_interval
        )

    async def stop(self, session_id: str) -> None:
        """Stop the session (idempotent: one already over or unknown is success)."""
        await self.arr.stop_session(session_id)


@dataclass(frozen=True)
class TaskCalls(ClientCalls):
    """The session API through the Prefect tasks: for code inside a flow run."""

    async def create(
        self,
        *,
        lease: timedelta,
        size: SessionSize,
        models: list[str] | None,
        session_id: str | None,
    ) -> Session:
        """Create the session as a ``create-session`` task run."""
        return await tasks.acreate_session(
            lease=lease, size=size, models=models, session_id=session_id, client=self.arr
        )

    def ready_wait_progress(
        self, session_id: str, created_at: float, timeout: float | None
    ) -> AbstractAsyncContextManager[ProgressArtifact | None]:
        """The run's ``session-ready-wait`` progress artifact."""
        limit = timeout if timeout is not None else self.arr.settings.ready_timeout
        return ready_wait_progress(session_id, self.arr.clock, created_at, limit)

    async def wait_until_ready(
        self,
        session_id: str,
        *,
        timeout: float | None,
        poll_interval: float | None,
        created_at: float,
    ) -> Session:
        """Wait as a ``wait-until-ready`` task run (it logs each status change)."""
        return await tasks.await_until_ready(
            session_id,
            timeout=timeout,
            poll_interval=poll_interval,
            client=self.arr,
            created_at=created_at,
        )

    async def stop(self, session_id: str) -> None:
        """Stop as a ``stop-session`` task run; directly if the task machinery fails."""
        try:
            await _stop_task()(session_id, client=self.arr)
            return
        except ArrError:
            raise
        except Exception as exc:  # noqa: BLE001 - the task machinery failed
            run_logger().warning("stop-session task could not run (%s); stopping directly", exc)
        await super().stop(session_id)


_STOP_TASKS: dict[object, object] = {}


def _stop_task() -> Any:
    """``stop-session`` without Prefect retries: the client's own retries fit in
    teardown's bound, and a Prefect retry delay would spend it waiting. Made once per
    form of the task (``with_options`` copies a task: CPU on every session's way out)."""
    base = tasks.astop_session
    made = _STOP_TASKS.get(base)
    if made is None:
        made = _STOP_TASKS[base] = base.with_options(retries=0)
    return made


def session_calls(arr: ArrClient, *, in_flow_run: bool) -> ClientCalls:
    """The way to call the session API: task runs inside a flow run, the client outside.

    Args:
        arr: The session's client (the tasks are given it too).
        in_flow_run: Whether the code runs inside a Prefect flow run.

    Returns:
        :class:`TaskCalls` in a flow run, else :class:`ClientCalls`.
    """
    return TaskCalls(arr) if in_flow_run else ClientCalls(arr)
