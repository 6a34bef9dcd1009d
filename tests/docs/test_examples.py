"""The docs' examples that are not Python flows stay true: the curl lifecycle, the
emulator's route table, the emulator recipe for deployments, the progress example, and
every Python example is one a test runs (tests/flows/test_readme_examples.py runs the
flows, tests/e2e/test_results.py the run_render_batch caller)."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from arr_prefect import ArrClient, load_settings
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.emulator.app import ROUTES
from arr_prefect.emulator.cli import build_parser
from arr_prefect.flows.progress import ProgressArtifact, job_progress
from tests.docs.pages import code_blocks, example_with, page, pages, section
from tests.emulator.test_serving import _curl_session

# What identifies each Python example of the docs, and the test that runs it.
RUN_BY = {
    "def my_render(": "tests/flows/test_readme_examples.py",
    "async def my_async_render(": "tests/flows/test_readme_examples.py",
    "def my_pipeline():": "tests/flows/test_readme_examples.py",
    "async def my_async_pipeline():": "tests/flows/test_readme_examples.py",
    '.save("arr-emulator"': "tests/flows/test_readme_examples.py",
    "async def my_pipeline_on_a_block(": "tests/flows/test_readme_examples.py",
    "await run_render_batch(render)": "tests/e2e/test_results.py",
    "async def my_job(session, scenes):": "test_progress_example_reports_each_scene",
}


def test_every_python_example_is_run() -> None:
    """Each ```python block of the README and the site is one that a test runs."""
    for name in pages():
        for block in code_blocks(name, "python"):
            runners = [marker for marker in RUN_BY if marker in block]
            assert runners, f"{name}: no test runs this example:\n{block}"


def test_emulator_curl_session_is_the_tested_one() -> None:
    """The emulator page's curl lifecycle is the one the loopback test runs, word for word."""
    [block] = [b for b in code_blocks("emulator.md", "bash") if "curl" in b]
    assert block.strip() == _curl_session().strip()


def test_emulator_route_table_is_the_emulators() -> None:
    """The API coverage table lists every route of the emulator, with its method."""
    rows = re.findall(
        r"^\| `([\w.]+)` \| (\w+) \|", section("emulator.md", "## API coverage"), re.M
    )
    assert rows == [(spec.name, spec.method) for spec in ROUTES]


def recipe() -> str:
    return code_blocks("deployments.md", "bash")[1]


def recipe_exports() -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", recipe(), re.M))


def test_emulator_recipe_deploys_as_the_first_block_does() -> None:
    """The emulator recipe's pool, deploy and worker commands are the deployment commands
    above it (which the end-to-end suite runs), in the same order."""
    first = [
        line
        for line in code_blocks("deployments.md", "bash")[0].splitlines()
        if line and not line.startswith("#")
    ]
    commands = [
        line
        for line in recipe().splitlines()
        if line.startswith("prefect ") and "server" not in line and "deployment run" not in line
    ]
    assert commands == first


def test_emulator_recipe_matches_the_emulator_it_starts() -> None:
    """The recipe's emulator flags parse, its ARR_TIME_SCALE is the emulator's time scale,
    and the Prefect API URL is the server's default address."""
    [line] = [line for line in recipe().splitlines() if line.startswith("arr-emulator ")]
    args = build_parser().parse_args(shlex.split(line)[1:])
    env = recipe_exports()
    assert float(env["ARR_TIME_SCALE"]) == args.time_scale
    assert env["ARR_SERVICE_URL"] == env["ARR_STS_URL"] == f"http://127.0.0.1:{args.port}"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


async def test_emulator_recipe_account_gets_a_token() -> None:
    """The recipe's ARR_* lines make valid settings whose account the emulator accepts."""
    env: dict[str, Any] = {
        k.removeprefix("ARR_").lower(): v
        for k, v in recipe_exports().items()
        if k.startswith("ARR_")
    }
    assert (env["account_id"], env["account_key"]) == (DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY)
    settings = load_settings(_env_file=None, **env)
    emulator = Emulator()
    async with ArrClient(settings, transport=emulator.transport()) as client:
        token = await client.get_access_token()
    assert token.account_id == DEFAULT_ACCOUNT_ID


class RecordedProgress(ProgressArtifact):
    """A progress artifact that records what it is given instead of writing it."""

    def __init__(self) -> None:
        super().__init__("test")
        self.posted: list[tuple[float, str]] = []

    def post(self, percent: float, description: str) -> None:
        self.posted.append((percent, description))


async def test_progress_example_reports_each_scene() -> None:
    """The progress example, run as a job: one report per scene, ending at 100 %."""
    rendered: list[str] = []

    async def render(session: Any, scene: str) -> None:
        rendered.append(scene)

    namespace: dict[str, Any] = {"render": render}
    exec(example_with("async def my_job(session, scenes):"), namespace)  # noqa: S102 - our own docs
    artifact = RecordedProgress()
    with job_progress(artifact):
        await namespace["my_job"](None, ["a.glb", "b.glb"])
    assert rendered == ["a.glb", "b.glb"]
    assert artifact.posted == [
        (50.0, "1 of 2 done: a.glb rendered"),
        (100.0, "2 of 2 done: b.glb rendered"),
    ]


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in pages()])
def test_no_page_points_at_what_users_cannot_see(name: str) -> None:
    """No page sends a reader to the design notes' ARR_API.md or to an issue number."""
    prose = re.sub(r"^```.*?^```", "", page(name), flags=re.M | re.S)
    assert "ARR_API.md" not in prose
    assert re.search(r"\bissue \d+", prose) is None


def test_demo_output_sample_is_what_the_demo_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """Getting started's sample of the demo's output has the demo's headings, the summary's
    rows in the summary's order, and the ledger's note, as the demo prints them."""
    from arr_prefect.flows import demo
    from arr_prefect.flows.render_batch import RenderSummary

    [sample] = [b for b in code_blocks("getting-started.md", "text") if "Render batch" in b]
    summary = RenderSummary.model_validate(
        {
            "session_id": "s",
            "size": "standard",
            "api_version": "v1",
            "time_to_ready_seconds": 96.0,
            "job": "j",
            "job_outcome": "succeeded",
            "lease_renewals": 1,
            "session_final_status": "Stopped",
            "stopped_by": "finally",
            "billed_minutes": 5,
        }
    )
    demo._print_summary(summary, demo.DEMO_TIME_SCALE)
    demo._print_ledger({"sessions": [], "running": 0})
    printed = capsys.readouterr().out
    for line in printed.splitlines():
        if not line.startswith("  ") or line.startswith(("  still", "  (ran")):
            assert line in sample.splitlines() or not line, line
    labels = re.findall(r"^  (\S[\w /]+?)  +", sample, re.M)
    assert labels[: len(summary.rows())] == [label for label, _ in summary.rows()]
