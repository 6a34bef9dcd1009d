"""No account key or access token in anything a full run leaves behind.

Each render_batch run (success, job failure, session Error, a token revoked mid-run) is
captured whole: every Python log record at DEBUG, Prefect's stored logs, artifacts, flow
and task run states and results, and the exception's str, repr and pickle. The key and
every token the STS issued (recorded off the wire) must appear in none of it. Runs that
use a saved credentials block are also checked in their events (as emitted and as the
server stored them), parameters, tags, the hook and reaper that follow, and the block's
own reprs and stored document.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
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
from prefect.events import Event, emit_event
from prefect.events.clients import AssertingPassthroughEventsClient
from prefect.events.filters import EventFilter, EventOccurredFilter
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogHandler
from prefect.states import Crashed

from arr_prefect.auth import AccessToken, TokenCache
from arr_prefect.client import ArrClient, use_client_factory
from arr_prefect.clock import VirtualClock, use_clock
from arr_prefect.credentials import RemoteRenderingCredentials, load_credentials
from arr_prefect.emulator import Emulator
from arr_prefect.flows import owner_tags, reap_orphaned_sessions, render_batch, stop_owned_sessions
from arr_prefect.settings import ArrSettings
from tests.security import jobs
from tests.security.conftest import (
    ACCOUNT_ID,
    ACCOUNT_KEY,
    BASE_URL,
    OTHER_ACCOUNT_ID,
    OTHER_ACCOUNT_KEY,
    RecordingTransport,
    make_settings,
)

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

    def factory(chosen: ArrSettings | None = None) -> ArrClient:
        return ArrClient(chosen or settings, transport=recording, clock=clock, token_cache=cache)

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


# ------------------------------------------------------------ a run that uses a saved block

BLOCK_LOGGERS = ("", "prefect", "arr", "arr_prefect", "httpx", "httpcore")


@pytest.fixture
def every_log() -> Iterator[_Collect]:
    """Every record at DEBUG, from the root and from the loggers that do not propagate."""
    handler = _Collect()
    saved = []
    for name in BLOCK_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(params=["v1", "2021-01-01"])
async def saved_block(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A credentials block for ACCOUNT_ID saved under a fresh name; deleted afterwards."""
    name = f"arr-security-{uuid.uuid4().hex[:10]}"
    await RemoteRenderingCredentials(
        account_id=ACCOUNT_ID,
        account_key=ACCOUNT_KEY,
        service_url=BASE_URL,
        sts_url=BASE_URL,
        api_version=str(request.param),
    ).asave(name)
    yield name
    await RemoteRenderingCredentials.adelete(name)


@pytest.fixture
def other_account_ambient(
    emulator: Emulator, recording: RecordingTransport, clock: VirtualClock
) -> Iterator[None]:
    """The ambient (ARR_*) settings name the other account: only the block reaches ours."""
    ambient = make_settings(account_id=OTHER_ACCOUNT_ID, account_key=OTHER_ACCOUNT_KEY)
    cache = TokenCache()

    def factory(chosen: ArrSettings | None = None) -> ArrClient:
        return ArrClient(chosen or ambient, transport=recording, clock=clock, token_cache=cache)

    jobs.EMULATOR[:] = [emulator]
    with use_clock(clock), use_client_factory(factory):
        yield
    jobs.EMULATOR.clear()


@pytest.fixture
def captured_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every event this process emits is kept (AssertingPassthroughEventsClient.all) and
    still sent to the server."""
    AssertingPassthroughEventsClient.reset()
    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_, **__: worker)
    yield
    worker.drain()


async def server_events(since: datetime, sentinel: str) -> list[Event]:
    """Every event the server stored since ``since``, once ``sentinel`` has arrived."""
    for _ in range(120):
        async with get_client() as prefect:
            page = await prefect.read_events(
                filter=EventFilter(occurred=EventOccurredFilter(since=since)), limit=50
            )
            events: list[Event] = list(page.events)
            while page.next_page is not None:
                page = await prefect.read_events_page(str(page.next_page))
                events += page.events
        if any(e.event == sentinel for e in events):
            return events
        await asyncio.sleep(0.5)
    raise AssertionError(f"the server never stored the event {sentinel}")


@pytest.mark.parametrize(("parameters", "fault"), SCENARIOS[:3])
async def test_no_key_anywhere_after_a_run_with_a_saved_block(
    saved_block: str,
    other_account_ambient: None,
    captured_events: None,
    emulator: Emulator,
    recording: RecordingTransport,
    every_log: _Collect,
    caplog: pytest.LogCaptureFixture,
    parameters: dict[str, Any],
    fault: str | None,
) -> None:
    """A render-batch run named to a saved block, then its teardown hook and the reaper as
    another process runs them: the key is in no log (any level), stored log, artifact,
    event, flow-run parameter, tag, state, result, error, block repr or block document."""
    caplog.set_level(logging.DEBUG)
    started = datetime.now(UTC) - timedelta(seconds=5)
    if fault is not None:
        emulator.faults.add(fault, "v1.create")
        emulator.faults.add(fault, "v2021.create")
    state = await render_batch(**parameters, credentials_block=saved_block, return_state=True)
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    result = await state.aresult(raise_on_failure=False)
    async with get_client() as prefect:
        flow_run = await prefect.read_flow_run(run_id)
    # The hook and the reaper, knowing only what the run recorded (as in another process).
    owner_tags._owned.clear()
    owner_tags._credentials_of.clear()
    await stop_owned_sessions(render_batch, flow_run, Crashed())
    reaper = await reap_orphaned_sessions(grace_minutes=0, return_state=True)
    assert reaper.is_completed(), reaper.message
    loaded = await load_credentials(saved_block)
    emit_event("arr.test.sentinel", resource={"prefect.resource.id": f"arr.test.{run_id}"})
    EventsWorker.instance().wait_until_empty()
    stored_events = await server_events(started, "arr.test.sentinel")

    haystack: list[str] = [caplog.text, *every_log.lines, repr(state), str(state.message)]
    haystack += [str(result), repr(result), pickle.dumps(result, protocol=0).decode("latin-1")]
    if isinstance(result, BaseException):
        haystack.append(cloudpickle.dumps(result).decode("latin-1"))
    await APILogHandler.aflush()
    runs = [run_id, reaper.state_details.flow_run_id]
    async with get_client() as prefect:
        logs = await prefect.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs))
        )
        artifacts = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=runs))
        )
        task_runs = await prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs))
        )
        flow_runs = [await prefect.read_flow_run(r) for r in runs if r is not None]
        document = await prefect.read_block_document_by_name(
            saved_block, RemoteRenderingCredentials.get_block_type_slug(), include_secrets=False
        )
    client_events = [e for c in AssertingPassthroughEventsClient.all for e in c.events]
    haystack += [log.message for log in logs]
    haystack += [repr(a.data) + str(a.description) for a in artifacts]
    haystack += [
        repr(t.state) + str(t.state and t.state.message) + repr(t.task_inputs) for t in task_runs
    ]
    for run in flow_runs:
        haystack += [repr(run), repr(run.parameters), repr(run.tags), str(run.state)]
        haystack.append(str(run.state and run.state.message))
    haystack += [e.model_dump_json() for e in [*client_events, *stored_events]]
    haystack += [repr(loaded), str(loaded), loaded.model_dump_json(), repr(document)]
    text = "\n".join(haystack)

    assert flow_run.parameters["credentials_block"] == saved_block
    assert f"arr-credentials:{saved_block}" in flow_run.tags
    assert logs, "the run stored no logs: the capture is broken"
    assert artifacts, "the run published no artifact: the capture is broken"
    assert any(e.event == "arr.session.created" for e in client_events), "no events captured"
    assert any(e.event.startswith("prefect.flow-run.") for e in stored_events)
    assert any(line.startswith("httpx DEBUG") or "DEBUG" in line for line in every_log.lines)
    assert recording.tokens, "no token was recorded off the wire"
    sessions = emulator.ledger()["sessions"]
    if fault is None:
        assert [s["account_id"] for s in sessions] == [ACCOUNT_ID]  # the block's, not ARR_*'s
    assert ACCOUNT_KEY not in text
    for token in recording.tokens:
        assert token not in text
        assert token.rsplit(".", 1)[-1] not in text
    assert emulator.running() == []
