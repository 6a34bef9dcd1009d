"""The Prefect UI shows a finished render-batch run (its summary artifact and our events),
and render-batch's run form offers a picker of the saved credentials blocks.

A real Prefect server with its UI (own home, loopback port), the demo's run against it
(the emulator in-process, time 60x), and Debian's headless Chromium driven over the
DevTools protocol: the flow-run page must fetch our ``arr.session.*`` events for its
timeline, list the ``render-batch-summary`` artifact, and the artifact's page must render
the summary (table and timeline). The deployment's run form must show a block picker for
``credentials`` holding the saved block, and a run submitted from it must store a reference
to the block document, never its fields. Screenshots are left next to the logs. About 2 min.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e._browser import chromium_binary, open_browser
from tests.e2e._stack import (
    BIN_DIR,
    SERVER_START_TIMEOUT,
    free_port,
    kill_process_group,
    tail,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = chromium_binary()
# Start-up of 2 min emulated (2 s real at the demo's 60x): the wait for Ready outlasts the
# 10 s (emulated) after which its progress artifact is first written, with room for that
# write on a loaded machine (with 30 s, a slow first poll once ended the wait before it).
DEMO_ARGS = ["--frames=2", "--seconds-per-frame=30", "--startup-seconds=120", "--lease-minutes=10"]
LIFECYCLE = ["arr.session.created", "arr.session.ready", "arr.session.stopped"]


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARR_"))}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            # Events become readable a second after they are emitted, not five.
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``prefect server start`` with its UI; (base URL, work directory)."""
    workdir = tmp_path_factory.mktemp("ui")
    port = free_port()
    log = workdir / "server.log"
    with log.open("ab") as sink:
        server = subprocess.Popen(
            [
                str(BIN_DIR / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            # The UI asks the API at the server's configured host and port (else :4200).
            env=_environment(workdir / "home")
            | {"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)},
            cwd=workdir,
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
        yield base, workdir
    finally:
        kill_process_group(server.pid)
        server.wait(timeout=10)


def _finished_run(base: str, workdir: Path) -> dict[str, object]:
    """Run the demo against the server; the render-batch flow run it left."""
    env = _environment(workdir / "home") | {"PREFECT_API_URL": f"{base}/api"}
    done = subprocess.run(
        [sys.executable, "-m", "arr_prefect.flows.demo", *DEMO_ARGS],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (workdir / "demo.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = httpx.post(
        f"{base}/api/flow_runs/filter",
        json={"flows": {"name": {"any_": ["render-batch"]}}},
        timeout=10,
    ).json()
    assert len(runs) == 1, runs
    run: dict[str, object] = runs[0]
    assert run["state_type"] == "COMPLETED"
    return run


def _artifact(base: str, run_id: str) -> dict[str, object]:
    """The run's summary artifact, as the API lists it."""
    artifacts: list[dict[str, object]] = httpx.post(
        f"{base}/api/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}}},
        timeout=10,
    ).json()
    (summary,) = [a for a in artifacts if a["key"] == "render-batch-summary"]
    return summary


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
async def test_flow_run_page_shows_artifact_and_events(ui_server: tuple[str, Path]) -> None:
    """The flow-run page of a finished run fetches our session events and lists the summary
    artifact; the artifact's page renders the summary table and timeline."""
    assert CHROMIUM is not None
    base, workdir = ui_server
    run = _finished_run(base, workdir)
    run_id = str(run["id"])
    session_tag = next(t for t in run["tags"] if t.startswith("arr-session:"))  # type: ignore[attr-defined]
    session_id = session_tag.removeprefix("arr-session:")
    # The run's events are in the database (the persister flushes every second).
    wait_for(
        lambda: (
            True
            if all(
                name
                in httpx.post(
                    f"{base}/api/events/filter",
                    json={"filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}"]}}},
                    timeout=10,
                ).text
                for name in LIFECYCLE
            )
            else None
        ),
        timeout=60,
        what="the run's session events to be stored",
        step=0.5,
    )

    artifact = _artifact(base, run_id)

    async with open_browser(CHROMIUM, workdir / "chromium.log") as page:
        await page.navigate(f"{base}/runs/flow-run/{run_id}")
        text = await page.wait_for_text(str(run["name"]), "Artifacts", "Completed")
        assert session_tag in text  # the ownership tag shows in the run's header

        # The page's timeline graph asks the API for the run's events: ours are there.
        async def our_events() -> list[dict[str, object]]:
            found = []
            for body in await page.response_bodies("/api/events/filter"):
                with_events = json.loads(body).get("events", [])
                found += [e for e in with_events if str(e["event"]).startswith("arr.session.")]
            return found

        events: list[dict[str, object]] = []
        for _ in range(60):
            events = await our_events()
            if {e["event"] for e in events} >= set(LIFECYCLE):
                break
            await asyncio.sleep(0.5)
        assert {e["event"] for e in events} >= set(LIFECYCLE), events
        for event in events:
            assert event["resource"]["arr.session.id"] == session_id  # type: ignore[index]
            assert "billed_minutes" in event["payload"]  # type: ignore[operator]
        await page.screenshot(workdir / "flow-run-page.png")

        # The Artifacts tab lists the summary.
        await page.send(
            "Runtime.evaluate", expression="document.querySelector('li.p-tab#artifacts').click()"
        )
        # ... and the progress artifacts of the wait for Ready and of the job.
        await page.wait_for_text(
            "render-batch-summary", "session-ready-wait", "render-job-progress"
        )
        await page.screenshot(workdir / "flow-run-artifacts.png")

        # The artifact's own page renders the Markdown: the table and the timeline.
        await page.navigate(f"{base}/artifacts/artifact/{artifact['id']}")
        text = await page.wait_for_text(
            "Render batch: succeeded", "Time to Ready", "billed per started minute", "Timeline"
        )
        assert "create → Ready" in text
        await page.screenshot(workdir / "artifact-page.png")
    print(f"screenshots in {workdir}")


PICKER_BLOCK = "ui-picker-account"
PICKER_KEY = "ui-picker-secret-key-5d1"
_SAVE_AND_DEPLOY = f"""
import asyncio, json
from arr_prefect import RemoteRenderingCredentials
from arr_prefect.flows import render_batch
from prefect import get_client

async def main():
    block_id = await RemoteRenderingCredentials(
        account_id="5b6c7d8e-9f01-4a23-8b45-c6d7e8f90a1b",
        account_key="{PICKER_KEY}",
        service_url="http://127.0.0.1:9",
        sts_url="http://127.0.0.1:9",
    ).asave("{PICKER_BLOCK}", overwrite=True)
    reference = {{"$ref": {{"block_document_id": str(block_id)}}}}
    async with get_client() as prefect:
        flow_id = await prefect.create_flow(render_batch)
        deployment_id = await prefect.create_deployment(
            flow_id=flow_id,
            name="ui-picker",
            entrypoint="arr_prefect/flows/render_batch.py:render_batch",
            parameter_openapi_schema=render_batch.parameters.model_dump(),
            parameters={{"credentials": reference}},
        )
    print(json.dumps({{"deployment_id": str(deployment_id), "block_id": str(block_id)}}))

asyncio.run(main())
"""


def _save_block_and_deploy(base: str, workdir: Path) -> dict[str, str]:
    """A saved credentials block and a render-batch deployment whose default
    ``credentials`` is that block (as the picker stores it); their IDs."""
    env = _environment(workdir / "home") | {"PREFECT_API_URL": f"{base}/api"}
    done = subprocess.run(
        [sys.executable, "-c", _SAVE_AND_DEPLOY],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
async def test_run_form_offers_a_credentials_block_picker(ui_server: tuple[str, Path]) -> None:
    """render-batch's run form shows `credentials` as a picker of saved blocks (the saved
    one selected), and a run submitted from the form stores a reference to the block."""
    assert CHROMIUM is not None
    base, workdir = ui_server
    ids = _save_block_and_deploy(base, workdir)
    async with open_browser(CHROMIUM, workdir / "chromium-picker.log") as page:
        await page.navigate(f"{base}/deployments/deployment/{ids['deployment_id']}/run")
        text = await page.wait_for_text("credentials", PICKER_BLOCK)
        assert PICKER_KEY not in text
        # The block's name shows in a block-document picker, not in a text box.
        picker = await page.send(
            "Runtime.evaluate",
            expression=(
                "Array.from(document.querySelectorAll('.block-document-input'))"
                ".map(e => e.innerText).join('|')"
            ),
        )
        assert PICKER_BLOCK in str(picker.get("result", {}).get("value", "")), picker
        await page.send(
            "Runtime.evaluate",
            expression="document.querySelector('.block-document-input')"
            ".scrollIntoView({block: 'center'})",
        )
        await asyncio.sleep(0.5)  # the scroll settles before the picture
        await page.screenshot(workdir / "run-form-picker.png")
        await page.send(
            "Runtime.evaluate",
            expression=(
                "Array.from(document.querySelectorAll('button'))"
                ".find(b => b.innerText.trim() === 'Submit').click()"
            ),
        )

        runs: list[dict[str, object]] = []
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            for _ in range(120):  # the form posts the run; a minute at most
                runs = (
                    await api.post(
                        "/api/flow_runs/filter",
                        json={"deployments": {"id": {"any_": [ids["deployment_id"]]}}},
                    )
                ).json()
                if runs:
                    break
                await asyncio.sleep(0.5)
    assert len(runs) == 1, f"no run submitted from the form: {runs}"
    (run,) = runs
    parameters: dict[str, object] = run["parameters"]  # type: ignore[assignment]
    assert parameters["credentials"] == {"$ref": {"block_document_id": ids["block_id"]}}
    assert PICKER_KEY not in json.dumps(run)
