"""The documentation site builds in strict mode, and its reference covers the public API.

One build per test run (about 4 s): ``mkdocs build --strict`` fails on a broken link, a
missing anchor, a page left out of the navigation, or a docstring mkdocstrings cannot
render; the tests below then read the built pages.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer.main

from tests.docs.pages import DOCS, ROOT

PUBLIC_MODULES = {
    "arr_prefect": "reference/arr_prefect.html",
    "arr_prefect.tasks": "reference/tasks.html",
    "arr_prefect.flows": "reference/flows.html",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built from the working tree into a temporary directory."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"
    return out


def ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


@pytest.mark.parametrize(
    ("module", "page"),
    [pytest.param(m, p, id=m) for m, p in PUBLIC_MODULES.items()],
)
def test_reference_documents_every_public_name(site: Path, module: str, page: str) -> None:
    """Every name of the module's ``__all__`` has its own entry in the API reference."""
    public = importlib.import_module(module).__all__
    documented = ids((site / page).read_text())
    # A name that is also its module's name (flows.render_batch) is documented from there.
    missing = [
        name
        for name in public
        if f"{module}.{name}" not in documented and f"{module}.{name}.{name}" not in documented
    ]
    assert missing == []


def test_reference_shows_signatures_and_sections(site: Path) -> None:
    """An entry carries its signature and its docstring's parameters, returns and raises."""
    html = (site / "reference" / "arr_prefect.html").read_text()
    entry = html.split('id="arr_prefect.load_settings"', 1)[1]
    entry = re.split(r'id="arr_prefect\.(?!load_settings\b)', entry, maxsplit=1)[0]
    assert "doc-signature" in entry
    for section in ("Parameters:", "Returns:", "Raises:"):
        assert section in entry, section


def test_arr_reference_lists_every_command_and_option(site: Path) -> None:
    """The `arr` reference has a section for every command and names every option, as the CLI
    itself defines them."""
    from arr_prefect.cli import app

    html = (site / "arr-reference.html").read_text()
    anchors = ids(html)
    todo = [(["arr"], typer.main.get_command(app))]
    seen = 0
    while todo:
        path, command = todo.pop()
        seen += 1
        assert "-".join(path) in anchors, " ".join(path)
        for param in command.params:
            for opt in param.opts if param.param_type_name == "option" else ():
                assert f"<code>{opt}</code>" in html, f"{' '.join(path)} {opt}"
        todo += [([*path, n], c) for n, c in (getattr(command, "commands", None) or {}).items()]
    assert seen == 8  # arr, token, sessions and its five commands


def test_teardown_picture_renders_offline(site: Path) -> None:
    """The teardown picture is an SVG image on its page that loads nothing from elsewhere."""
    assert 'src="img/teardown-layers.svg"' in (site / "teardown.html").read_text()
    svg = (site / "img" / "teardown-layers.svg").read_text()
    root = ET.fromstring(svg)  # noqa: S314 - our own file, not untrusted input
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert re.findall(r"(?:href|src)=\"[^\"#]", svg) == []
    assert "<script" not in svg


def test_site_works_from_files_with_no_network(site: Path) -> None:
    """No page loads a script, style or font from the network, and the search index is
    a local script (Material's offline plugin), so the site and its search work from disk."""
    assert (site / "search" / "search_index.js").exists()
    for page in site.rglob("*.html"):
        remote = re.findall(
            r"<(?:script|link)[^>]*(?:src|href)=\"(?:https?:)?//[^\"]+", page.read_text()
        )
        assert remote == [], page.name


def test_every_page_is_built(site: Path) -> None:
    """Every Markdown page under docs/ becomes a page of the site."""
    for page in DOCS.rglob("*.md"):
        built = site / page.relative_to(DOCS).with_suffix(".html")
        assert built.exists(), page


def test_changelog_page_shows_the_changelog(site: Path) -> None:
    """The Changelog page is the repository's CHANGELOG.md, included as it is."""
    changelog = ROOT / "CHANGELOG.md"
    html = (site / "changelog.html").read_text()
    if not changelog.exists():
        pytest.skip("CHANGELOG.md is not in this checkout yet")
    first_heading = re.search(r"^#+ (.+)$", changelog.read_text(), re.MULTILINE)
    assert first_heading is not None
    assert first_heading[1].strip("`") in html
