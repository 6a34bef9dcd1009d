"""The Python examples of the README and the docs site run, as written, against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from arr_prefect.emulator import Emulator
from tests.docs.pages import code_blocks, example_with

pytestmark = pytest.mark.usefixtures("arr")


@pytest.mark.parametrize(
    ("page", "flow_name"),
    [
        pytest.param("README.md", "my_pipeline", id="readme-rendering_session"),
        pytest.param("using-in-flows.md", "my_render", id="tasks-def"),
        pytest.param("using-in-flows.md", "my_async_render", id="tasks-async"),
        pytest.param("using-in-flows.md", "my_pipeline", id="rendering_session-def"),
        pytest.param("using-in-flows.md", "my_async_pipeline", id="rendering_session-async"),
    ],
)
async def test_docs_example_runs(emulator: Emulator, page: str, flow_name: str) -> None:
    """The example's flow runs and leaves its session stopped (a `def` flow as a script
    calls it: in a thread with no event loop)."""
    [example] = [b for b in code_blocks(page, "python") if f"def {flow_name}(" in b]
    namespace: dict[str, Any] = {}
    exec(compile(example, f"{page}: {flow_name}", "exec"), namespace)  # noqa: S102 - our own docs
    flow = namespace[flow_name]
    if flow.isasync:
        await flow()
    else:
        await asyncio.to_thread(flow)
    [entry] = emulator.ledger()["sessions"]
    assert entry["status"] == "Stopped"


async def test_readme_credentials_block_examples_run(emulator: Emulator) -> None:
    """The block saved as the Credentials page shows is the one the page's flow loads and
    uses, and the run records it by name."""
    from prefect import get_client

    from arr_prefect.credentials import RemoteRenderingCredentials

    save = compile(example_with('.save("arr-emulator"'), "credentials.md: save", "exec")
    use = compile(example_with("def my_pipeline_on_a_block"), "credentials.md: flow", "exec")
    namespace: dict[str, Any] = {}
    # As a script runs it: outside an event loop, so the example's save() is sync.
    await asyncio.to_thread(exec, save, namespace)
    try:
        exec(use, namespace)  # noqa: S102 - our own docs
        state = await namespace["my_pipeline_on_a_block"](return_state=True)
        assert state.is_completed()
        async with get_client() as prefect:
            run = await prefect.read_flow_run(state.state_details.flow_run_id)
        assert "arr-credentials:arr-emulator" in run.tags
    finally:
        await RemoteRenderingCredentials.adelete("arr-emulator")
    [entry] = emulator.ledger()["sessions"]
    assert entry["status"] == "Stopped"
