"""run_render_batch refuses bad arguments before it starts any run."""

from __future__ import annotations

from typing import Any

import pytest

from arr_prefect.errors import InvalidInputError
from arr_prefect.flows import run_render_batch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"timeout": 0}, "timeout must be positive", id="timeout-zero"),
        pytest.param({"timeout": -5.0}, "timeout must be positive", id="timeout-negative"),
        pytest.param({"poll_interval": 0}, "poll_interval must be positive", id="poll-zero"),
    ],
)
async def test_bad_arguments_start_no_run(kwargs: dict[str, Any], message: str) -> None:
    """A clear error, raised before any Prefect API call (none is reachable here)."""
    with pytest.raises(InvalidInputError, match=message):
        await run_render_batch({}, deployment="no-such/deployment", **kwargs)
