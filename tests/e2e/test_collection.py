"""A Prefect server started where the wheel is installed knows the credentials block type
with no ``prefect block register``: the package's ``prefect.collections`` entry point,
which Prefect imports when the server starts (as it does for its own integrations).

The server is started the way the README says (``prefect server start``), from the
wheel-only venv (``pip install arr-prefect``), with a home of its own: a database that never
saw the block type. About 20-40 s on top of the shared stack.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e._stack import (
    SERVER_START_TIMEOUT,
    Stack,
    free_port,
    kill_process_group,
    tail,
    wait_for,
)

pytestmark = pytest.mark.e2e

BLOCK_TYPE_SLUG = "remote-rendering-credentials"


def _user_environment(stack: Stack, home: Path, port: int) -> dict[str, str]:
    """A shell with the wheel-only venv activated, a fresh Prefect home, this server."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARR_"))}
    return stack.ensure_venv().env(clean) | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        # Rich sizes `block type ls`'s table to the terminal: wide enough for the slug.
        "COLUMNS": "200",
    }


def test_fresh_server_lists_the_block_type_without_register(stack: Stack, tmp_path: Path) -> None:
    """`prefect server start` with the wheel installed registers the credentials block
    type by itself: `prefect block type ls` lists it, and the API has its schema."""
    venv = stack.ensure_venv()
    prefect = str(venv.bin_dir / "prefect")
    port = free_port()
    env = _user_environment(stack, tmp_path / "home", port)
    log = tmp_path / "server.log"
    with log.open("ab") as sink:
        server = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool | None:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{tail(log)}")
            try:
                return httpx.get(f"{base}/api/health", timeout=2).status_code == 200 or None
            except httpx.HTTPError:
                return None

        wait_for(healthy, timeout=SERVER_START_TIMEOUT, what="the Prefect server", step=0.25)
        listed = subprocess.run(
            [prefect, "block", "type", "ls"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert BLOCK_TYPE_SLUG in listed.stdout, listed.stdout
        schema = httpx.get(f"{base}/api/block_types/slug/{BLOCK_TYPE_SLUG}", timeout=10)
        assert schema.status_code == 200, schema.text
        assert schema.json()["name"] == "Remote Rendering Credentials"
    finally:
        kill_process_group(server.pid)
        server.wait(timeout=10)
