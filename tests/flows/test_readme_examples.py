"""The README's Python examples run, as written, against the emulator."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from arr_prefect.emulator import Emulator

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)

pytestmark = pytest.mark.usefixtures("arr")


@pytest.mark.parametrize(
    ("index", "flow_name"),
    [
        pytest.param(0, "my_render", id="tasks"),
        pytest.param(1, "my_pipeline", id="rendering_session"),
    ],
)
async def test_readme_example_runs(emulator: Emulator, index: int, flow_name: str) -> None:
    """The example's flow runs and leaves its session stopped."""
    namespace: dict[str, Any] = {}
    exec(compile(EXAMPLES[index], f"README.md example {index + 1}", "exec"), namespace)  # noqa: S102 - our own README
    await namespace[flow_name]()
    [entry] = emulator.ledger()["sessions"]
    assert entry["status"] == "Stopped"


def example_with(text: str) -> str:
    """The README's one Python example containing ``text``."""
    [example] = [e for e in EXAMPLES if text in e]
    return str(example)


async def test_readme_credentials_block_examples_run(emulator: Emulator) -> None:
    """The block saved as the README shows is the one the README's flow loads and uses,
    and the run records it by name."""
    from prefect import get_client

    from arr_prefect.credentials import RemoteRenderingCredentials

    save = compile(example_with('.save("arr-emulator"'), "README.md block example", "exec")
    use = compile(example_with("def my_pipeline_on_a_block"), "README.md block flow", "exec")
    namespace: dict[str, Any] = {}
    # As a script runs it: outside an event loop, so the README's sync save() is sync.
    await asyncio.to_thread(exec, save, namespace)
    try:
        exec(use, namespace)  # noqa: S102 - our own README
        state = await namespace["my_pipeline_on_a_block"](return_state=True)
        assert state.is_completed()
        async with get_client() as prefect:
            run = await prefect.read_flow_run(state.state_details.flow_run_id)
        assert "arr-credentials:arr-emulator" in run.tags
    finally:
        await RemoteRenderingCredentials.adelete("arr-emulator")
    [entry] = emulator.ledger()["sessions"]
    assert entry["status"] == "Stopped"
