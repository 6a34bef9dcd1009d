"""The README stays a front door: the two commands, the docs command, and links that lead
somewhere. (The manual is the site under docs/: tests/docs/ keeps it true.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LINKS = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)


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


def test_readme_says_how_to_serve_the_site() -> None:
    """The README gives the one command that builds and serves the docs site, and it is
    a script that serves it with mkdocs."""
    assert "```console\n./scripts/docs\n```" in README
    script = ROOT / "scripts" / "docs"
    assert script.stat().st_mode & 0o111
    assert "mkdocs serve" in script.read_text()


def test_readme_fits_on_a_few_screens() -> None:
    """The README stays a front door: at most 250 lines."""
    assert len(README.splitlines()) <= 250


@pytest.mark.parametrize("target", sorted(set(LINKS)))
def test_readme_links_lead_somewhere(target: str) -> None:
    """Every relative link of the README names a file of the repository."""
    if target.startswith(("http://", "https://")):
        pytest.skip("an address on the web, not a file")
    assert (ROOT / target).exists(), target


def test_readme_links_every_page_of_the_site() -> None:
    """Each page in the site's navigation is linked from the README's page list."""
    nav = re.findall(r":\s+(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    linked = {link.removeprefix("docs/") for link in LINKS}
    # The site's home page is the README's own job.
    missing = [page for page in nav if page not in linked | {"index.md"}]
    assert missing == []
