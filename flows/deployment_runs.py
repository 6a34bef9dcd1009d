"""Run the ``render-batch`` deployment from other flows and programs: ``run_render_batch``.

``run_deployment`` alone leaves two gaps for a pipeline that renders through our
deployment. Prefect does not cancel a deployment run when the flow that started it is
cancelled, times out or crashes, so the render-batch run would go on renting its session
until its job ends. And a caller wants the run's :class:`RenderSummary`, not a flow run
to inspect. :func:`run_render_batch` starts the run (linked to the calling flow run as a
subflow, like ``run_deployment``), waits for it while logging its state changes, returns
its summary (``render_batch`` persists it, JSON-serialized), and cancels the run whenever
it stops waiting before the run is over: the caller cancelled (from the UI or API), its
own or its flow's timeout, SIGTERM, an error.

What it cannot cover: a caller killed without a chance to run code (SIGKILL, a lost
host). The render-batch run then goes on until its job ends; its own teardown still
stops the session then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

import anyio
from prefect import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.deployments import arun_deployment
from prefect.states import Cancelled, Cancelling

from arr_prefect.credentials import RemoteRenderingCredentials, block_reference
from arr_prefect.errors import InvalidInputError
from arr_prefect.flows.render_batch import RenderSummary
from arr_prefect.tasks._dual import called_from_sync, run_sync
from arr_prefect.tasks.sessions import run_logger

__all__ = [
    "RENDER_BATCH_DEPLOYMENT",
    "RenderBatchRunError",
    "RenderBatchTimeoutError",
    "arun_render_batch",
    "run_render_batch",
]

RENDER_BATCH_DEPLOYMENT = "render-batch/render-batch"
"""The deployment prefect.yaml creates for :func:`render_batch`."""

# Cancelling the run must not hang the caller's own teardown.
CANCEL_TIMEOUT_SECONDS = 30.0
CANCELLED_BY_CALLER = "Cancelled by run_render_batch"
"""How the messages of the states run_render_batch sets on the run begin."""


class RenderBatchRunError(RuntimeError):
    """The render-batch run ended without completing (Failed, Crashed, Cancelled, ...).

    Attributes:
        flow_run_id: The run, whose ``render-batch-summary`` artifact says what happened.
        state: The name of its final state.
    """

    def __init__(self, message: str, *, flow_run_id: UUID, state: str) -> None:
        super().__init__(message)
        self.flow_run_id = flow_run_id
        self.state = state


class RenderBatchTimeoutError(TimeoutError):
    """The render-batch run was not over within ``run_render_batch``'s timeout; it was
    cancelled (its teardown stops its session)."""

    def __init__(self, message: str, *, flow_run_id: UUID) -> None:
        super().__init__(message)
        self.flow_run_id = flow_run_id


async def arun_render_batch(
    parameters: Mapping[str, Any] | None = None,
    *,
    deployment: str = RENDER_BATCH_DEPLOYMENT,
    timeout: float | None = None,
    poll_interval: float = 5.0,
    tags: Iterable[str] | None = None,
    job_variables: Mapping[str, Any] | None = None,
    flow_run_name: str | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> RenderSummary:
    """Run the render-batch deployment, wait for it and return its summary; cancel the run
    if the caller stops waiting first (cancelled, timed out, crashed). The async form of
    :func:`run_render_batch` (which also serves sync callers).

    Args:
        parameters: ``render_batch``'s parameters (``size``, ``job_command``,
            ``job_parameters``, ...), merged with the deployment's defaults.
        deployment: ``"flow-name/deployment-name"`` of a render_batch deployment.
        timeout: Real seconds to wait for the run before cancelling it and raising
            :class:`RenderBatchTimeoutError`. None: as long as it takes (the flow has a
            timeout of its own).
        poll_interval: Real seconds between reads of the run's state.
        tags: Tags for the run, besides the deployment's.
        job_variables: Work-pool job variables for the run (e.g. ``{"env": {...}}``).
        flow_run_name: A name for the run.
        credentials: A saved credentials block for the run's account, passed by reference
            (as the UI's picker does; the run loads it, its key never in the parameters).

    Returns:
        The run's :class:`RenderSummary` (its result).

    Raises:
        RenderBatchRunError: The run ended Failed, Crashed or Cancelled (by someone else).
        RenderBatchTimeoutError: ``timeout`` passed; the run was cancelled.
    """
    if timeout is not None and not timeout > 0:
        raise InvalidInputError(f"timeout must be positive seconds or None, got {timeout!r}")
    if not poll_interval > 0:
        raise InvalidInputError(f"poll_interval must be positive seconds, got {poll_interval!r}")
    logger = run_logger()
    run = await arun_deployment(
        deployment,
        parameters={
            **(parameters or {}),
            **({"credentials": block_reference(credentials)} if credentials else {}),
        },
        timeout=0,
        tags=list(tags) if tags is not None else None,
        job_variables=dict(job_variables) if job_variables is not None else None,
        flow_run_name=flow_run_name,
    )
    logger.info("Started %s as flow run %s (%s)", deployment, run.name, run.id)
    try:
        with anyio.move_on_after(timeout) as deadline:
            run = await _wait_until_final(run, poll_interval)
    except BaseException:
        await _cancel(run.id, "the caller stopped waiting (cancelled, timed out or crashed)")
        raise
    if deadline.cancelled_caught:
        await _cancel(run.id, f"not over within its timeout of {timeout:.0f} s")
        raise RenderBatchTimeoutError(
            f"{deployment} run {run.name} was not over within {timeout:.0f} s and was"
            " cancelled; its teardown stops its session",
            flow_run_id=run.id,
        )
    return await _summary_of(run, deployment)


def run_render_batch(
    parameters: Mapping[str, Any] | None = None,
    *,
    deployment: str = RENDER_BATCH_DEPLOYMENT,
    timeout: float | None = None,
    poll_interval: float = 5.0,
    tags: Iterable[str] | None = None,
    job_variables: Mapping[str, Any] | None = None,
    flow_run_name: str | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> Any:
    """Run the render-batch deployment, wait for it and return its :class:`RenderSummary`;
    cancel the run if the caller stops waiting first. From sync code (a ``def`` flow or
    task, a script) it returns the summary; from async code it returns the awaitable, as
    :func:`arun_render_batch` (its async form, with the arguments documented there).

    From sync code the wait runs on the package's event-loop thread: when the caller is
    interrupted (its flow run cancelled or timed out, SIGTERM, Ctrl-C) the render-batch
    run is cancelled before the interruption is raised on. Example::

        @flow
        def my_pipeline():
            summary = run_render_batch({"size": "standard"}, timeout=3600)
            print(summary.billed_minutes)

    Args:
        parameters: ``render_batch``'s parameters, merged with the deployment's defaults.
        deployment: ``"flow-name/deployment-name"`` of a render_batch deployment.
        timeout: Real seconds to wait before cancelling the run (None: no limit).
        poll_interval: Real seconds between reads of the run's state.
        tags: Tags for the run, besides the deployment's.
        job_variables: Work-pool job variables for the run.
        flow_run_name: A name for the run.
        credentials: A saved credentials block, passed to the run by reference.

    Returns:
        From sync code, the run's :class:`RenderSummary`; from async code, the awaitable
        that gives it.

    Raises:
        RenderBatchRunError: The run ended Failed, Crashed or Cancelled (by someone else).
        RenderBatchTimeoutError: ``timeout`` passed; the run was cancelled.
    """
    call = arun_render_batch(
        parameters,
        deployment=deployment,
        timeout=timeout,
        poll_interval=poll_interval,
        tags=tags,
        job_variables=job_variables,
        flow_run_name=flow_run_name,
        credentials=credentials,
    )
    if not called_from_sync():
        return call
    return run_sync(call)


async def _wait_until_final(run: FlowRun, poll_interval: float) -> FlowRun:
    logger = run_logger()
    seen = run.state.name if run.state else None
    async with get_client() as prefect:
        while True:
            run = await prefect.read_flow_run(run.id)
            state = run.state.name if run.state else None
            if state != seen:
                logger.info("Flow run %s is %s", run.name, state)
                seen = state
            if run.state is not None and run.state.is_final():
                return run
            await anyio.sleep(poll_interval)


async def _cancel(run_id: UUID, reason: str) -> None:
    """Cancel the run unless it is over: shielded (the caller is being cancelled) and
    bounded. A run a worker started is set Cancelling, so the worker ends its process
    and its teardown and hooks stop its session; one not started yet is Cancelled."""
    logger = run_logger()
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT_SECONDS):
        try:
            async with get_client() as prefect:
                run = await prefect.read_flow_run(run_id)
                if run.state is None or run.state.is_final():
                    return
                # Pending or later: a worker has it, and ends its process on Cancelling.
                started = run.state.type in (
                    StateType.PENDING,
                    StateType.RUNNING,
                    StateType.CANCELLING,
                )
                message = f"{CANCELLED_BY_CALLER}: {reason}"
                new_state: State[Any] = (
                    Cancelling(message=message) if started else Cancelled(message=message)
                )
                await prefect.set_flow_run_state(run_id, new_state, force=True)
            logger.warning("Cancelled flow run %s: %s", run.name, reason)
        except Exception as exc:  # noqa: BLE001 - the caller's own outcome matters more
            logger.warning(
                "Could not cancel flow run %s (%s); its session stops when its job ends",
                run_id,
                exc,
            )


async def _summary_of(run: FlowRun, deployment: str) -> RenderSummary:
    state = run.state
    assert state is not None
    if not state.is_completed():
        raise RenderBatchRunError(
            f"{deployment} run {run.name} ended {state.name}"
            + (f": {state.message}" if state.message else "")
            + "; its render-batch-summary artifact says what happened",
            flow_run_id=run.id,
            state=state.name or state.type.value,
        )
    result = await state.aresult()
    if isinstance(result, RenderSummary):
        return result
    # A JSON result whose class could not be imported comes back as its fields.
    return RenderSummary.model_validate(result)
