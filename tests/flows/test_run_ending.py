"""How render-batch words the end of a run that did not succeed."""

from __future__ import annotations

import asyncio
import signal

from prefect.exceptions import TerminationSignal

from arr_prefect.flows.render_batch import _ending


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
