"""A saved RemoteRenderingCredentials block: tasks, flows, hooks and the reaper all use its
account, found by name, while the ambient (ARR_*) settings name another account."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, get_client
from prefect.client.schemas.objects import State
from prefect.states import Crashed
from pydantic import SecretStr

from arr_prefect import tasks
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.credentials import (
    RemoteRenderingCredentials,
    load_credentials,
    saved_credentials_names,
    settings_from_block,
)
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.errors import ConfigurationError, SessionNotFoundError
from arr_prefect.flows import (
    LeaseKeeper,
    RenderSummary,
    owner_tags,
    reap_orphaned_sessions,
    record_session_owner,
    render_batch,
    rendering_session,
    stop_owned_sessions,
)
from tests.flows.conftest import make_settings

pytestmark = pytest.mark.usefixtures("arr")

BLOCK_ACCOUNT_ID = "5b6c7d8e-9f01-4a23-8b45-c6d7e8f90a1b"
BLOCK_ACCOUNT_KEY = "the-block-account-key-91c"


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[Emulator]:
    """Two accounts: the ambient one (the `arr` fixture's settings) and the block's."""
    emu = Emulator(
        {DEFAULT_ACCOUNT_ID: DEFAULT_ACCOUNT_KEY, BLOCK_ACCOUNT_ID: BLOCK_ACCOUNT_KEY},
        clock=clock,
        startup_seconds=60,
    )
    yield emu
    leaked = [(s.id, s.status) for s in emu.running()]
    assert leaked == [], f"sessions left running: {leaked}"


def unsaved(api_version: str) -> RemoteRenderingCredentials:
    return RemoteRenderingCredentials(
        account_id=BLOCK_ACCOUNT_ID,
        account_key=BLOCK_ACCOUNT_KEY,
        service_url="http://127.0.0.1:9",  # the test's client factory answers it in-process
        sts_url="http://127.0.0.1:9",
        api_version=api_version,
    )


@pytest.fixture
async def block(api_version: str) -> AsyncIterator[RemoteRenderingCredentials]:
    """A saved block for the block account, loaded back by its name; deleted afterwards."""
    name = f"arr-test-{uuid.uuid4().hex[:10]}"
    await unsaved(api_version).asave(name)
    loaded = await RemoteRenderingCredentials.aload(name)
    yield loaded
    await RemoteRenderingCredentials.adelete(name)


def accounts_of(emulator: Emulator) -> dict[str, str]:
    """Session id -> account id, for every session the emulator ever made."""
    return {s["id"]: s["account_id"] for s in emulator.ledger()["sessions"]}


def flow_run_id(state: State[Any]) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


async def test_every_task_takes_credentials(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """The seven tasks, given credentials=, work on the block's account, not the ambient one."""
    token = await tasks.get_access_token.fn(credentials=block)
    assert token.account_id == BLOCK_ACCOUNT_ID
    session = await tasks.create_session.fn(lease=timedelta(minutes=30), credentials=block)
    assert accounts_of(emulator) == {session.id: BLOCK_ACCOUNT_ID}
    ready = await tasks.wait_until_ready.fn(session.id, credentials=block)
    assert ready.status == "Ready"
    extended = await tasks.extend_session.fn(
        session.id, extend_by=timedelta(minutes=45), credentials=block
    )
    assert extended.max_lease is not None
    assert extended.max_lease >= timedelta(minutes=45)
    assert (await tasks.get_session.fn(session.id, credentials=block)).id == session.id
    assert [s.id for s in await tasks.list_sessions.fn(credentials=block)] == [session.id]
    assert await tasks.list_sessions.fn() == []  # the ambient account has none
    with pytest.raises(SessionNotFoundError):
        await tasks.get_session.fn(session.id)
    assert await tasks.stop_session.fn(session.id, credentials=block) is True
    assert emulator.running() == []


async def test_tasks_in_a_flow_take_a_loaded_block(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """Through Prefect's engine too: the block passes as a task argument, unchanged."""

    @flow
    async def lifecycle() -> str:
        session = await tasks.create_session(lease=timedelta(minutes=10), credentials=block)
        await tasks.wait_until_ready(session.id, credentials=block)
        await tasks.stop_session(session.id, credentials=block)
        return session.id

    session_id = await lifecycle()
    assert accounts_of(emulator) == {session_id: BLOCK_ACCOUNT_ID}


async def test_client_argument_wins_over_credentials(
    emulator: Emulator, block: RemoteRenderingCredentials, clock: VirtualClock, api_version: str
) -> None:
    """An explicit client= beats credentials=, which beats the ARR_* settings."""
    ambient = ArrClient(make_settings(api_version), transport=emulator.transport(), clock=clock)
    async with ambient:
        session = await tasks.create_session.fn(
            lease=timedelta(minutes=10), client=ambient, credentials=block
        )
        await tasks.stop_session.fn(session.id, client=ambient)
    assert accounts_of(emulator) == {session.id: DEFAULT_ACCOUNT_ID}


async def test_rendering_session_records_the_block_by_name(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """rendering_session(credentials=) uses the block's account and tags the run with the
    block's name: never the key."""
    seen: list[str] = []

    @flow
    async def pipeline() -> None:
        async with rendering_session(lease=timedelta(minutes=5), credentials=block) as session:
            seen.append(session.id)

    state = await pipeline(return_state=True)
    assert state.is_completed()
    assert accounts_of(emulator) == {seen[0]: BLOCK_ACCOUNT_ID}
    async with get_client() as prefect:
        run = await prefect.read_flow_run(flow_run_id(state))
    assert f"arr-credentials:{block.block_name}" in run.tags
    assert f"arr-session:{seen[0]}" in run.tags
    assert not any(BLOCK_ACCOUNT_KEY in tag for tag in run.tags)


async def test_hook_in_another_process_reaches_the_block_account(
    emulator: Emulator, block: RemoteRenderingCredentials, api_version: str
) -> None:
    """stop_owned_sessions, knowing only the run (as in the runner's process), finds the
    block by the name the run recorded and stops the session in the block's account."""

    @flow
    async def leaky() -> str:
        session = await tasks.create_session(lease=timedelta(minutes=30), credentials=block)
        await record_session_owner(session.id, api_version=api_version, credentials=block)
        return session.id

    state = await leaky(return_state=True)
    session_id = await state.aresult()
    assert [s.id for s in emulator.running()] == [session_id]
    owner_tags._owned.clear()  # what another process knows: only the run's record
    owner_tags._credentials_of.clear()
    async with get_client() as prefect:
        run = await prefect.read_flow_run(flow_run_id(state))
    await stop_owned_sessions(leaky, run, Crashed())
    assert emulator.running() == []
    assert accounts_of(emulator) == {session_id: BLOCK_ACCOUNT_ID}


async def test_hook_finds_the_block_from_render_batch_parameters(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """A run whose tags were lost still names its block in its credentials_block parameter."""
    async with get_client() as prefect:
        deployment_run = await prefect.create_flow_run(
            render_batch, parameters={"credentials_block": block.block_name}
        )
    session = await tasks.create_session.fn(lease=timedelta(minutes=30), credentials=block)
    async with get_client() as prefect:
        await prefect.update_flow_run(deployment_run.id, tags=[f"arr-session:{session.id}"])
        run = await prefect.read_flow_run(deployment_run.id)
    await stop_owned_sessions(render_batch, run, Crashed())
    assert emulator.running() == []
    async with get_client() as prefect:
        await prefect.delete_flow_run(run.id)


async def test_unsaved_credentials_serve_hooks_in_the_same_process(
    emulator: Emulator, api_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsaved block has no name to record: a warning says so, and a hook in the same
    process still stops the session with it."""
    credentials = unsaved(api_version)

    @flow
    async def leaky() -> str:
        session = await tasks.create_session(lease=timedelta(minutes=30), credentials=credentials)
        await record_session_owner(session.id, api_version=api_version, credentials=credentials)
        return session.id

    with caplog.at_level(logging.WARNING):
        state = await leaky(return_state=True)
    assert "not a saved block" in caplog.text
    session_id = await state.aresult()
    async with get_client() as prefect:
        run = await prefect.read_flow_run(flow_run_id(state))
    assert not any(tag.startswith("arr-credentials:") for tag in run.tags)
    await stop_owned_sessions(leaky, run, Crashed())
    assert emulator.running() == []
    assert accounts_of(emulator) == {session_id: BLOCK_ACCOUNT_ID}


async def test_render_batch_runs_on_the_named_block(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """render_batch(credentials_block=name) renders on the block's account; the run's
    parameters hold the name and nothing else of the block."""
    state = await render_batch(
        job_parameters={"frames": 2, "seconds_per_frame": 30},
        credentials_block=block.block_name,
        return_state=True,
    )
    summary = await state.aresult()
    assert isinstance(summary, RenderSummary)
    assert summary.session_final_status == "Stopped"
    assert accounts_of(emulator) == {summary.session_id: BLOCK_ACCOUNT_ID}
    async with get_client() as prefect:
        run = await prefect.read_flow_run(flow_run_id(state))
    assert run.parameters["credentials_block"] == block.block_name
    assert BLOCK_ACCOUNT_KEY not in repr(run.parameters)
    assert f"arr-credentials:{block.block_name}" in run.tags


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param("no-such-block", "no RemoteRenderingCredentials block named 'no-such-block'", id="unknown"),
        pytest.param("   ", "non-empty string", id="blank"),
    ],
)  # fmt: skip
async def test_render_batch_bad_block_name_fails_before_any_session(
    emulator: Emulator, name: str, match: str
) -> None:
    """An unknown block name is a clear error, and no session is created."""
    with pytest.raises(ConfigurationError, match=match):
        await render_batch(credentials_block=name)
    assert emulator.ledger()["sessions"] == []


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        pytest.param({"account_id": "not-a-guid"}, "GUID", id="bad-account-id"),
        pytest.param({"api_version": "2019-07-01"}, "api_version", id="unknown-api-version"),
    ],
)
async def test_invalid_saved_block_is_refused_by_name(
    emulator: Emulator, fields: dict[str, Any], match: str
) -> None:
    """A block saved with bad fields (as the UI's form can) is refused when loaded, with its
    name and the reason, never the key; no session is created."""
    name = f"arr-test-bad-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "account_id": BLOCK_ACCOUNT_ID,
        "account_key": SecretStr(BLOCK_ACCOUNT_KEY),
        "region": "westus2",
        "api_version": "v1",
        **fields,
    }
    await RemoteRenderingCredentials.model_construct(**values).asave(name)
    try:
        with pytest.raises(
            ConfigurationError, match=f"block '{name}' is invalid.*{match}"
        ) as raised:
            await render_batch(credentials_block=name)
        assert BLOCK_ACCOUNT_KEY not in str(raised.value)
        with pytest.raises(ConfigurationError, match="is invalid"):
            await asyncio.to_thread(settings_from_block, name)
    finally:
        await RemoteRenderingCredentials.adelete(name)
    assert emulator.ledger()["sessions"] == []


async def test_lease_keeper_takes_credentials(
    emulator: Emulator, block: RemoteRenderingCredentials, clock: VirtualClock
) -> None:
    """A LeaseKeeper with credentials= and no client renews in the block's account."""
    session = await tasks.create_session.fn(lease=timedelta(minutes=4), credentials=block)
    await tasks.wait_until_ready.fn(session.id, credentials=block)
    async with LeaseKeeper(session_id=session.id, lease=timedelta(minutes=4), credentials=block):
        await clock.sleep(30 * 60)  # many renewals
    current = await tasks.get_session.fn(session.id, credentials=block)
    assert current.status == "Ready"  # kept alive well past its first 4-minute lease
    await tasks.stop_session.fn(session.id, credentials=block)


def test_lease_keeper_needs_a_session_id() -> None:
    """LeaseKeeper without a session ID is a clear TypeError."""
    with pytest.raises(TypeError, match="session_id"):
        LeaseKeeper(lease=timedelta(minutes=4))


@flow
async def leaves_a_session_behind(block_name: str) -> str:
    """Creates a session with a saved block, records itself as owner, never stops it."""
    credentials = await load_credentials(block_name)
    session = await tasks.create_session(lease=timedelta(minutes=30), credentials=credentials)
    await record_session_owner(session.id, credentials=credentials)
    return session.id


async def test_reaper_visits_every_saved_block_account(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """With no block named, the reaper reaps the ARR_* account and every saved block's."""
    assert block.block_name in await saved_credentials_names()
    assert block.block_name is not None
    session_id = await leaves_a_session_behind(block.block_name)
    report = await reap_orphaned_sessions(grace_minutes=0)
    assert report.stopped == [session_id]
    assert report.decisions[0].account == f"block {block.block_name}"
    assert emulator.running() == []


async def test_reaper_with_a_named_block_reaps_only_it(
    emulator: Emulator, block: RemoteRenderingCredentials
) -> None:
    """credentials_block= limits the reaper to that account."""
    assert block.block_name is not None
    session_id = await leaves_a_session_behind(block.block_name)
    ambient = await tasks.create_session.fn(lease=timedelta(minutes=30))
    report = await reap_orphaned_sessions(grace_minutes=0, credentials_block=block.block_name)
    assert [d.session_id for d in report.decisions] == [session_id]
    assert report.stopped == [session_id]
    assert [s.id for s in emulator.running()] == [ambient.id]
    await tasks.stop_session.fn(ambient.id)


async def test_reaper_unknown_block_is_a_clear_error(emulator: Emulator) -> None:
    """The reaper refuses an unknown block name before listing anything."""
    with pytest.raises(ConfigurationError, match="no RemoteRenderingCredentials block named"):
        await reap_orphaned_sessions(credentials_block="nothing-saved-as-this")
    assert emulator.request_count("v1.list") + emulator.request_count("v2021.list") == 0
