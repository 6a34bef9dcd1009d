"""The credentials block across process boundaries, for real: `prefect block register -m
arr_prefect` against a Prefect server, and a teardown hook run in a separate process (as
Prefect's runner runs it) that reaches the block's account on a loopback `arr-emulator`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prefect import flow, get_client
from prefect.settings import PREFECT_API_URL

from arr_prefect import tasks
from arr_prefect.credentials import RemoteRenderingCredentials, load_credentials
from arr_prefect.flows import record_session_owner
from tests.emulator.test_serving import running_emulator

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_ID = "3c4d5e6f-7081-4a92-b3c4-d5e6f7a8b9c0"
ACCOUNT_KEY = "loopback-block-key-5e1"


def prefect_env() -> dict[str, str]:
    """This process's environment without any ARR_* setting, pointed at the test server."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARR_")}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def test_block_register_module_finds_the_block() -> None:
    """`prefect block register -m arr_prefect` registers the block type, which the UI's
    Blocks catalog then lists with its description."""
    slug = RemoteRenderingCredentials.get_block_type_slug()
    async with get_client() as prefect:
        try:
            existing = await prefect.read_block_type_by_slug(slug)
            await prefect.delete_block_type(existing.id)  # so the command must create it
        except Exception:  # noqa: BLE001, S110 - not registered yet: nothing to delete
            pass
    result = await asyncio.to_thread(
        subprocess.run,
        ["prefect", "block", "register", "-m", "arr_prefect"],
        env=prefect_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully registered 1 block" in result.stdout
    assert "Remote Rendering Credentials" in result.stdout
    async with get_client() as prefect:
        catalog = await prefect.read_block_types()  # what the UI's Blocks catalog shows
        [ours] = [t for t in catalog if t.slug == slug]
        schema = await prefect.get_most_recent_block_schema_for_block_type(ours.id)
    assert ours.name == "Remote Rendering Credentials"
    assert ours.description is not None
    assert "Azure Remote Rendering account" in ours.description
    assert ours.logo_url is not None
    assert ours.code_example is not None
    assert "RemoteRenderingCredentials.load" in ours.code_example
    assert schema is not None
    assert schema.fields["secret_fields"] == ["account_key"]


@flow
async def leaves_a_session_behind(block_name: str) -> str:
    """Creates a session with the saved block, records itself as owner, never stops it."""
    credentials = await load_credentials(block_name)
    session = await tasks.create_session(lease=timedelta(minutes=30), credentials=credentials)
    await record_session_owner(session.id, credentials=credentials)
    return session.id


HOOK_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from uuid import UUID
    from prefect import get_client
    from prefect.states import Crashed
    from arr_prefect.flows import stop_owned_sessions

    async def main() -> None:
        async with get_client() as prefect:
            run = await prefect.read_flow_run(UUID(sys.argv[1]))
        await stop_owned_sessions(None, run, Crashed())

    asyncio.run(main())
    """
)


@pytest.mark.loopback
async def test_hook_in_a_separate_process_reaches_the_block_account() -> None:
    """A hook run in a fresh process with no ARR_* settings at all stops the session,
    having found the block by the name the flow run recorded (the key never leaves the
    block: not in the run, not in the hook's output)."""
    with running_emulator(
        "--startup-seconds", "0", "--account-id", ACCOUNT_ID, "--account-key", ACCOUNT_KEY
    ) as (_, url):
        name = f"arr-test-{uuid.uuid4().hex[:10]}"
        await RemoteRenderingCredentials(
            account_id=ACCOUNT_ID, account_key=ACCOUNT_KEY, service_url=url, sts_url=url
        ).asave(name)
        try:
            state = await leaves_a_session_behind(name, return_state=True)
            session_id = await state.aresult()
            run_id = state.state_details.flow_run_id
            async with get_client() as prefect:
                run = await prefect.read_flow_run(run_id)  # type: ignore[arg-type]
            assert f"arr-credentials:{name}" in run.tags
            hook = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", HOOK_IN_ANOTHER_PROCESS, str(run_id)],
                env=prefect_env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert hook.returncode == 0, hook.stdout + hook.stderr
            assert f"stopped its session {session_id}" in hook.stdout + hook.stderr
            assert ACCOUNT_KEY not in hook.stdout + hook.stderr
            async with httpx.AsyncClient(timeout=10) as http:
                ledger = (await http.get(f"{url}/_emulator/ledger")).json()
            assert [(s["id"], s["status"]) for s in ledger["sessions"]] == [(session_id, "Stopped")]
        finally:
            await RemoteRenderingCredentials.adelete(name)


async def run_arr(*args: str) -> subprocess.CompletedProcess[str]:
    """The `arr` command, in its own process, with no ARR_* settings."""
    return await asyncio.to_thread(
        subprocess.run,
        ["arr", *args],
        env=prefect_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.loopback
async def test_arr_command_line_uses_a_saved_block() -> None:
    """`arr sessions list --block NAME` reaches the block's account; an unknown name is a
    usage error (exit 2) that says what to do, not a traceback."""
    with running_emulator(
        "--startup-seconds", "0", "--account-id", ACCOUNT_ID, "--account-key", ACCOUNT_KEY
    ) as (_, url):
        name = f"arr-test-{uuid.uuid4().hex[:10]}"
        await RemoteRenderingCredentials(
            account_id=ACCOUNT_ID, account_key=ACCOUNT_KEY, service_url=url, sts_url=url
        ).asave(name)
        try:
            listed = await run_arr("sessions", "list", "--block", name, "--json")
            unknown = await run_arr("sessions", "list", "--block", "no-such-block")
        finally:
            await RemoteRenderingCredentials.adelete(name)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout.strip() == "[]"
    assert ACCOUNT_KEY not in listed.stdout + listed.stderr
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "no RemoteRenderingCredentials block named 'no-such-block'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
