"""The README's Python examples run, as written, against the emulator."""

from __future__ import annotations

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
