"""RemoteRenderingCredentials in Prefect's shape: a CredentialsBlock with get_client(),
Prefect's standard block tests, and render-batch taking the block itself (a picker in the
run form, a reference to the block document in the run's parameters)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prefect import get_client
from prefect.blocks.abstract import CredentialsBlock
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites.blocks import BlockStandardTestSuite
from pydantic import SecretStr

from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.credentials import (
    RemoteRenderingCredentials,
    block_reference,
    credentials_name_of,
)
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.errors import ConfigurationError, InvalidInputError
from arr_prefect.flows import RenderSummary, render_batch, run_render_batch
from arr_prefect.flows import deployment_runs as deployment_runs_module

BLOCK_ACCOUNT_ID = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
BLOCK_ACCOUNT_KEY = "picker-block-key-that-never-shows"
FRAMES = {"frames": 2, "seconds_per_frame": 30}


class TestStandardBlockSuite(BlockStandardTestSuite):
    """Prefect's own checks of an integration's block: description, documentation URL,
    a described field each, a code example that loads the block by name."""

    @pytest.fixture
    def block(self) -> type[Block]:
        return RemoteRenderingCredentials


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


def unsaved(api_version: str = "v1") -> RemoteRenderingCredentials:
    return RemoteRenderingCredentials(
        account_id=BLOCK_ACCOUNT_ID,
        account_key=BLOCK_ACCOUNT_KEY,
        service_url="http://127.0.0.1:9",  # the test's client factory answers it in-process
        sts_url="http://127.0.0.1:9",
        api_version=api_version,
    )


@pytest.fixture
async def saved(api_version: str) -> AsyncIterator[RemoteRenderingCredentials]:
    """A saved block of the block account, loaded back by name; deleted afterwards."""
    name = f"arr-picker-{uuid.uuid4().hex[:10]}"
    await unsaved(api_version).asave(name)
    yield await RemoteRenderingCredentials.aload(name)
    await RemoteRenderingCredentials.adelete(name)


def test_is_a_prefect_credentials_block() -> None:
    """The block is Prefect's CredentialsBlock, as Prefect's own integrations' are."""
    assert issubclass(RemoteRenderingCredentials, CredentialsBlock)


@pytest.mark.usefixtures("arr")
async def test_get_client_is_a_ready_client_of_the_block_account(
    emulator: Emulator, api_version: str
) -> None:
    """get_client() talks to the block's account (through the installed client factory),
    with the block's API version; settings overrides win."""
    credentials = unsaved(api_version)
    async with credentials.get_client() as arr:
        assert isinstance(arr, ArrClient)
        assert (arr.account_id, arr.api_version) == (BLOCK_ACCOUNT_ID, api_version)
        session = await arr.create_session(lease=30)  # minutes
        await arr.stop_session(session.id)
    assert [s["account_id"] for s in emulator.ledger()["sessions"]] == [BLOCK_ACCOUNT_ID]
    other = "2021-01-01" if api_version == "v1" else "v1"
    assert credentials.get_client(api_version=other).api_version == other


def test_get_client_never_shows_the_key() -> None:
    """Neither the client's repr nor the block's holds the key."""
    credentials = unsaved()
    assert BLOCK_ACCOUNT_KEY not in repr(credentials.get_client())
    assert BLOCK_ACCOUNT_KEY not in repr(credentials)


@pytest.mark.usefixtures("arr")
async def test_render_batch_takes_the_block(
    emulator: Emulator, saved: RemoteRenderingCredentials
) -> None:
    """render_batch(credentials=block) renders on the block's account and records the
    block's name for the hooks; the run's parameters never hold the key."""
    state = await render_batch(job_parameters=FRAMES, credentials=saved, return_state=True)
    summary = await state.aresult()
    assert isinstance(summary, RenderSummary)
    assert summary.session_final_status == "Stopped"
    assert [s["account_id"] for s in emulator.ledger()["sessions"]] == [BLOCK_ACCOUNT_ID]
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    async with get_client() as prefect:
        run = await prefect.read_flow_run(run_id)
    assert f"arr-credentials:{saved.block_name}" in run.tags
    assert BLOCK_ACCOUNT_KEY not in repr(run.parameters)


def test_block_parameter_is_a_picker_in_the_run_form() -> None:
    """The run form's schema types `credentials` as the block type (the UI shows a picker
    of saved blocks of that type, not a text box)."""
    schema = render_batch.parameters.model_dump()
    (typed, _none) = schema["properties"]["credentials"]["anyOf"]
    definition = schema["definitions"][typed["$ref"].rsplit("/", 1)[-1]]
    assert definition["block_type_slug"] == "remote-rendering-credentials"
    assert definition["properties"]["account_key"]["format"] == "password"


async def test_a_reference_parameter_becomes_the_saved_block(
    saved: RemoteRenderingCredentials,
) -> None:
    """What the picker stores, {"$ref": {"block_document_id": ...}}, is what the flow
    gets as the loaded block, name and key included."""
    reference = block_reference(saved)
    assert reference == {"$ref": {"block_document_id": str(saved._block_document_id)}}
    parameters = render_batch.validate_parameters({"credentials": reference})
    loaded = parameters["credentials"]
    assert isinstance(loaded, RemoteRenderingCredentials)
    assert loaded.block_name == saved.block_name
    assert loaded.account_key.get_secret_value() == BLOCK_ACCOUNT_KEY


def test_an_unsaved_block_has_no_reference() -> None:
    """A deployment run cannot be given an unsaved block: a clear error says to save it."""
    with pytest.raises(ConfigurationError, match="save it first"):
        block_reference(unsaved())


async def test_run_render_batch_passes_the_block_by_reference(
    saved: RemoteRenderingCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_render_batch(credentials=block) sends the reference with the other parameters,
    never the block's fields (their JSON has the key masked)."""
    sent: dict[str, Any] = {}

    class Started(Exception):
        """Stands for the run having been started: nothing more to see."""

    async def fake_arun_deployment(name: str, **kwargs: Any) -> None:
        sent.update(kwargs["parameters"])
        raise Started

    monkeypatch.setattr(deployment_runs_module, "arun_deployment", fake_arun_deployment)
    with pytest.raises(Started):
        await run_render_batch({"size": "premium"}, credentials=saved)
    assert sent == {"size": "premium", "credentials": block_reference(saved)}


@pytest.mark.usefixtures("arr")
async def test_block_name_still_works_with_a_deprecation_warning(
    emulator: Emulator, saved: RemoteRenderingCredentials
) -> None:
    """The 0.1.0 form, credentials_block=<name>, renders on that block and warns that it
    is deprecated in favour of credentials."""
    with pytest.warns(DeprecationWarning, match="pass the block as credentials"):
        summary = await render_batch(job_parameters=FRAMES, credentials_block=saved.block_name)
    assert summary.session_final_status == "Stopped"
    assert [s["account_id"] for s in emulator.ledger()["sessions"]] == [BLOCK_ACCOUNT_ID]


@pytest.mark.usefixtures("arr")
async def test_block_and_name_together_are_refused_before_any_session(
    emulator: Emulator, saved: RemoteRenderingCredentials
) -> None:
    """Both forms at once is ambiguous: refused, and no session is created."""
    with pytest.raises(InvalidInputError, match="not both"):
        await render_batch(credentials=saved, credentials_block=saved.block_name)
    assert emulator.ledger()["sessions"] == []


@pytest.mark.usefixtures("arr")
async def test_an_invalid_block_parameter_fails_before_any_session(
    emulator: Emulator,
) -> None:
    """A block given as the parameter is checked by the settings' rules (Prefect loads a
    referenced block without them), before any session exists."""
    credentials = RemoteRenderingCredentials.model_construct(
        account_id="not-a-guid", account_key=SecretStr(BLOCK_ACCOUNT_KEY), service_url="http://x"
    )
    with pytest.raises(ConfigurationError, match="GUID"):
        await render_batch(credentials=credentials)
    assert emulator.ledger()["sessions"] == []


async def test_a_run_parameter_names_its_block(saved: RemoteRenderingCredentials) -> None:
    """The hooks read a run's block from either parameter form: a reference resolves to
    the block's name, a name is itself; anything else names none."""
    assert await credentials_name_of(block_reference(saved)) == saved.block_name
    assert await credentials_name_of(f" {saved.block_name} ") == saved.block_name
    gone = {"$ref": {"block_document_id": str(uuid.uuid4())}}
    assert await credentials_name_of(gone) is None
    assert await credentials_name_of({"account_id": BLOCK_ACCOUNT_ID}) is None
    assert await credentials_name_of(None) is None
