"""How render-batch words the end of a run that did not succeed, and the two Prefect log
records it drops after a cancel from the Prefect UI or API (``flows/cancel_noise.py``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator

import pytest
from prefect.exceptions import TerminationSignal

from arr_prefect.flows import cancel_noise
from arr_prefect.flows.render_batch import _ending

RUN = "0f6c7a0e-8d0b-4c55-9a43-0d2a4f1c0001"
OTHER_RUN = "0f6c7a0e-8d0b-4c55-9a43-0d2a4f1c0002"


def cancelled_while_handling_sigterm() -> asyncio.CancelledError:
    """The CancelledError asyncio.run's shutdown throws into the flow's task after
    Prefect's SIGTERM handler raised TerminationSignal in the idle event loop."""
    try:
        try:
            raise TerminationSignal(signal.SIGTERM)
        except TerminationSignal:
            raise asyncio.CancelledError from None  # implicit __context__ stays
    except asyncio.CancelledError as exc:
        return exc


async def test_sigterm_behind_a_cancellation_is_named() -> None:
    """A SIGTERM that reached the flow as a CancelledError: the signal ended it, and the
    summary carries no bare ``CancelledError``."""
    exc = cancelled_while_handling_sigterm()
    assert isinstance(exc.__context__, TerminationSignal)
    assert await _ending(exc, "failed", 0.0) == (
        "cancelled",
        "signal SIGTERM sent to the flow-run process",
        None,
    )


async def test_plain_cancellation_and_failures() -> None:
    """A task.cancel() with nothing behind it, a failure, and a run whose job never began."""
    assert await _ending(asyncio.CancelledError(), "failed", 0.0) == (
        "cancelled",
        "cancellation of the task running the flow",
        None,
    )
    assert await _ending(RuntimeError("boom"), "failed", 0.0) == (
        "failed",
        None,
        "RuntimeError: boom",
    )
    outcome, ended_by, error = await _ending(asyncio.CancelledError(), "not started", 0.0)
    assert (outcome, error) == ("not started", None)
    assert ended_by == "cancellation of the task running the flow"


@pytest.fixture
def noise_filter() -> Iterator[list[logging.LogRecord]]:
    """The records that get past the filter, with the filter's state restored after."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    loggers = [logging.getLogger(n) for n in (cancel_noise.FLOW_RUN_LOGGER, "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield kept
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.removeFilter(cancel_noise._filter)
        cancel_noise._cancelled_runs.clear()


def emit_both(run_id: str) -> None:
    """Prefect's stale final line for ``run_id`` and asyncio's shutdown traceback."""
    logging.getLogger(cancel_noise.FLOW_RUN_LOGGER).error(
        "Finished in state Running()", extra={"flow_run_id": run_id}
    )
    try:
        raise TerminationSignal(signal.SIGTERM)
    except TerminationSignal:
        logging.getLogger("asyncio").error(
            "unhandled exception during asyncio.run() shutdown\ntask: <Task finished>",
            exc_info=True,
        )


def test_prefect_cancel_noise_is_dropped_only_after_a_confirmed_cancel(
    noise_filter: list[logging.LogRecord],
) -> None:
    """Before render-batch confirmed a cancel from Prefect, every record passes; after,
    exactly the two false alarms of that run go, and nothing else."""
    emit_both(RUN)
    assert len(noise_filter) == 2
    noise_filter.clear()

    cancel_noise.drop_after_prefect_cancel(RUN)
    cancel_noise.drop_after_prefect_cancel(RUN)  # idempotent: one filter per logger
    assert logging.getLogger("asyncio").filters.count(cancel_noise._filter) == 1
    emit_both(RUN)
    assert noise_filter == []

    flow_runs = logging.getLogger(cancel_noise.FLOW_RUN_LOGGER)
    flow_runs.error("Finished in state Running()", extra={"flow_run_id": OTHER_RUN})
    flow_runs.error(
        "Finished in state Crashed('Execution was cancelled by the runtime environment.')",
        extra={"flow_run_id": RUN},
    )
    flow_runs.info("Flow run was cancelled.", extra={"flow_run_id": RUN})
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        logging.getLogger("asyncio").error(
            "unhandled exception during asyncio.run() shutdown", exc_info=True
        )
    assert [r.getMessage().splitlines()[0] for r in noise_filter] == [
        "Finished in state Running()",
        "Finished in state Crashed('Execution was cancelled by the runtime environment.')",
        "Flow run was cancelled.",
        "unhandled exception during asyncio.run() shutdown",
    ]
