"""No account key or access token in anything a full run leaves behind.

Each render_batch run (success, job failure, session Error, a token revoked mid-run) is
captured whole: every Python log record at DEBUG, Prefect's stored logs, artifacts, flow
and task run states and results, and the exception's str, repr and pickle. The key and
every token the STS issued (recorded off the wire) must appear in none of it.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler

from arr_prefect.auth import AccessToken, TokenCache
from arr_prefect.client import ArrClient, use_client_factory
from arr_prefect.clock import VirtualClock, use_clock
from arr_prefect.emulator import Emulator
from arr_prefect.flows import render_batch
from tests.security import jobs
from tests.security.conftest import ACCOUNT_KEY, RecordingTransport, make_settings

pytestmark = pytest.mark.usefixtures("prefect_server")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes any traceback text
        self.lines.append(repr(record.args))


@pytest.fixture
def root_logs() -> Iterator[_Collect]:
    handler = _Collect()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(params=["v1", "2021-01-01"])
def wired(
    request: pytest.FixtureRequest,
    emulator: Emulator,
    recording: RecordingTransport,
    clock: VirtualClock,
) -> Iterator[str]:
    """Tasks and flows use the emulator through the token-recording transport."""
    settings = make_settings(str(request.param))
    cache = TokenCache()

    def factory() -> ArrClient:
        return ArrClient(settings, transport=recording, clock=clock, token_cache=cache)

    jobs.EMULATOR[:] = [emulator]
    with use_clock(clock), use_client_factory(factory):
        yield str(request.param)
    jobs.EMULATOR.clear()


SCENARIOS = [
    pytest.param({"job_parameters": {"frames": 2, "seconds_per_frame": 30}}, None, id="success"),
    pytest.param(
        {"job_parameters": {"frames": 3, "seconds_per_frame": 10, "fail_at_frame": 2}},
        None,
        id="job-failure",
    ),
    pytest.param({}, "session_error", id="session-error"),
    pytest.param(
        {"job_callable": "tests.security.jobs:revoke_tokens"}, None, id="token-revoked-401"
    ),
]


@pytest.mark.parametrize(("parameters", "fault"), SCENARIOS)
async def test_no_key_or_token_anywhere_after_a_run(
    wired: str,
    emulator: Emulator,
    recording: RecordingTransport,
    root_logs: _Collect,
    caplog: pytest.LogCaptureFixture,
    parameters: dict[str, Any],
    fault: str | None,
) -> None:
    """Logs, stored logs, artifacts, states, results and errors hold no key and no token."""
    caplog.set_level(logging.DEBUG)
    if fault is not None:
        emulator.faults.add(fault, "v1.create" if wired == "v1" else "v2021.create")
    state = await render_batch(**parameters, return_state=True)
    haystack: list[str] = [caplog.text, *root_logs.lines, repr(state), str(state.message)]
    result = await state.aresult(raise_on_failure=False)
    haystack += [str(result), repr(result), pickle.dumps(result, protocol=0).decode("latin-1")]
    if isinstance(result, BaseException):
        haystack.append(cloudpickle.dumps(result).decode("latin-1"))
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    await APILogHandler.aflush()  # run logs reach the server in batches
    async with get_client() as prefect:
        logs = await prefect.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        task_runs = await prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        flow_run = await prefect.read_flow_run(run_id)
    haystack += [log.message for log in logs]
    haystack += [repr(a.data) + str(a.description) for a in artifacts]
    haystack += [
        repr(t.state) + str(t.state and t.state.message) + repr(t.task_inputs) for t in task_runs
    ]
    haystack += [
        repr(flow_run),
        repr(flow_run.parameters),
        str(flow_run.state and flow_run.state.message),
    ]
    text = "\n".join(haystack)

    assert logs, "the run stored no logs: the capture is broken"
    assert artifacts, "the run published no artifact: the capture is broken"
    assert recording.tokens, "no token was recorded off the wire"
    assert ACCOUNT_KEY not in text
    for token in recording.tokens:
        assert token not in text
        assert token.rsplit(".", 1)[-1] not in text  # not even the signature
    if parameters.get("job_callable"):
        assert emulator.request_count("sts.token", 200) >= 2  # the 401 path was taken
    assert emulator.running() == []


def test_settings_never_show_the_key() -> None:
    """repr, str and JSON of the settings mask the account key."""
    settings = make_settings()
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.model_dump()),
    ):
        assert ACCOUNT_KEY not in text


async def test_client_and_token_reprs_never_show_secrets(
    emulator: Emulator, recording: RecordingTransport, clock: VirtualClock
) -> None:
    """ArrClient and AccessToken reprs (and a token's JSON) hold neither key nor token."""
    async with ArrClient(
        make_settings(), transport=recording, clock=clock, token_cache=TokenCache()
    ) as arr:
        token = await arr.get_access_token()
        texts = [repr(arr), str(arr), repr(token), str(token), token.model_dump_json()]
    assert isinstance(token, AccessToken)
    [raw] = recording.tokens
    for text in texts:
        assert ACCOUNT_KEY not in text
        assert raw not in text
