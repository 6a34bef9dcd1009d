"""The README's commands and examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

from tests.emulator.test_serving import _curl_session

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_curl_session_is_the_tested_one() -> None:
    """The README's curl lifecycle is the one the loopback test runs, word for word."""
    block = README.split("this block is run by the test suite):\n\n```bash\n", 1)[1]
    block = block.split("```", 1)[0]
    assert block.strip() == _curl_session().strip()


def test_readme_has_the_two_setup_commands() -> None:
    """The README names exactly two set-up commands: the main job and the test suite."""
    commands = re.findall(r"```bash\n(\./scripts/\w+)\n```", README)
    assert commands == ["./scripts/demo", "./scripts/test"]
    for command in commands:
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} is not executable"


def test_ci_runs_the_readme_test_command() -> None:
    """CI runs exactly the README's test command."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci
