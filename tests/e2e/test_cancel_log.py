"""What an operator reads after cancelling a render-batch run from the UI, end to end.

A ``render-batch`` deployment run on the real process worker is cancelled the way the
UI's Cancel button does it (``Cancelling``, forced) while its job runs. Then the run's
logs, as the Prefect API serves them to the UI, and the worker's log of this run are read:
the run ends Cancelled, its log ends with our one-line summary naming who cancelled, the
session and the teardown layer that stopped it, and nothing in either log says error:
no ``ERROR ... Finished in state Running()``, no traceback, no ``TerminationSignal``.
(README, *What a run shows*, says which of these lines Prefect 3.9.1 writes on its own
and why render-batch drops them.) About 20 s on a loaded 2-core machine, once the shared
stack is up.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import Log, StateType

from tests.e2e._stack import Stack, StackError
from tests.e2e.test_teardown import Scenario, Scene

pytestmark = pytest.mark.e2e

SUMMARY_PREFIX = "Render batch: session "


async def run_logs(prefect: PrefectClient, scene: Scene) -> list[Log]:
    """The run's logs as the UI reads them, once our summary line has arrived (the
    flow-run process sends its last lines as it exits; the worker sets Cancelled after)."""
    assert scene.run_id is not None
    deadline = time.monotonic() + 20
    while True:
        logs = await prefect.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[scene.run_id])), limit=200
        )
        if any(log.message.startswith(SUMMARY_PREFIX) for log in logs):
            await asyncio.sleep(1.0)  # and whatever the process logged after it
            return await prefect.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[scene.run_id])), limit=200
            )
        if time.monotonic() > deadline:
            raise StackError(
                "no summary line in the run's logs after 20 s:\n"
                + "\n".join(f"{log.level} {log.message}" for log in logs)
                + f"\n{await scene.describe()}"
            )
        await asyncio.sleep(0.25)


async def test_cancel_from_the_ui_reads_clean(live_worker: Stack) -> None:
    """A UI cancel: run Cancelled; one summary line with who, session, layer and seconds;
    no ERROR line in the run's log; no traceback or TerminationSignal in the worker's."""
    stack = live_worker
    worker_log = stack.processes["worker"].log
    async with PrefectClient(stack.api_url) as prefect:
        scene = Scene(stack, prefect, Scenario("cancel log", "cancel", "finally", ("Cancelled",)))
        await scene.start()
        await scene.wait_job_in_progress()
        offset = worker_log.stat().st_size  # this run's part of the worker log starts here
        await scene.trigger()
        await scene.wait_session_ended()
        run = await scene.wait_run_final()
        logs = await run_logs(prefect, scene)
    # The worker logs the flow-run process's output as it comes, and sets Cancelled only
    # after that process exited: by now all of this run's lines are in its log.
    worker_lines = worker_log.read_bytes()[offset:].decode(errors="replace")
    text = "\n".join(f"{logging.getLevelName(log.level)} {log.message}" for log in logs)
    context = f"run log:\n{text}\nworker log since the cancel:\n{worker_lines}"

    assert run.state is not None, context
    assert run.state.type == StateType.CANCELLED, context
    errors = [log.message for log in logs if log.level >= logging.ERROR]
    assert errors == [], context
    assert not any("Finished in state Running()" in log.message for log in logs), context
    assert "Traceback" not in worker_lines, context
    assert "TerminationSignal" not in worker_lines, context
    assert "Finished in state Running()" not in worker_lines, context

    [summary] = [log.message for log in logs if log.message.startswith(SUMMARY_PREFIX)]
    assert f"session {scene.session_id}," in summary, context
    assert "cancelled (a cancel from the Prefect UI or API)" in summary, context
    assert "stopped by finally in " in summary, context
    assert "Error" not in summary, context  # no bare CancelledError / TerminationSignal
