"""What a release process reads: version, licence, classifiers, the Prefect range, and the
entry point through which Prefect finds the credentials block."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import entry_points, metadata, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import arr_prefect

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DISTRIBUTION = "arr-prefect"


def _pinned(constraints: str, package: str) -> Version:
    text = (REPO / constraints).read_text()
    found = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.M)
    assert found, f"{constraints} pins no {package}"
    return Version(found[1])


def _prefect_requirement() -> Requirement:
    (prefect,) = [
        Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("prefect")
    ]
    return prefect


def test_version_comes_from_the_installed_metadata() -> None:
    """arr_prefect.__version__ is the distribution's version, which is pyproject's."""
    assert arr_prefect.__version__ == version(DISTRIBUTION)
    assert arr_prefect.__version__ == PYPROJECT["project"]["version"]


def test_licence_is_declared_and_shipped() -> None:
    """The metadata says Apache-2.0 and the LICENSE file holds that licence's text."""
    assert metadata(DISTRIBUTION)["License-Expression"] == "Apache-2.0"
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License\n")


def test_classifiers_name_only_the_python_the_tests_run() -> None:
    """The Python versions classified are exactly the one this suite runs on."""
    classifiers = metadata(DISTRIBUTION).get_all("Classifier") or []
    versions = {
        c.removeprefix("Programming Language :: Python :: ")
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert versions == {f"{sys.version_info.major}.{sys.version_info.minor}"}


def test_project_urls_are_declared() -> None:
    """Homepage, documentation, source, issues and changelog links are in the metadata."""
    urls = {u.split(",")[0] for u in metadata(DISTRIBUTION).get_all("Project-URL") or []}
    assert urls >= {"Homepage", "Documentation", "Source", "Issues", "Changelog"}


@pytest.mark.parametrize(
    ("constraints", "where"),
    [
        pytest.param("constraints-floor.txt", "floor", id="floor"),
        pytest.param("constraints.txt", "newest", id="newest"),
    ],
)
def test_the_tested_prefects_bound_the_declared_range(constraints: str, where: str) -> None:
    """The floor environment tests exactly pyproject's lowest Prefect; the newest
    environment tests one inside the range."""
    requirement = _prefect_requirement()
    pinned = _pinned(constraints, "prefect")
    assert pinned in requirement.specifier
    if where == "floor":
        lowest = [s.version for s in requirement.specifier if s.operator == ">="]
        assert [Version(v) for v in lowest] == [pinned]


def test_prefect_finds_the_block_through_the_collections_entry_point() -> None:
    """The `prefect.collections` entry point is named as Prefect matches a worker's
    integrations (the distribution's name, with '_'), and loading it defines the block."""
    (entry,) = [e for e in entry_points(group="prefect.collections") if e.name == "arr_prefect"]
    assert entry.name == DISTRIBUTION.replace("-", "_")
    module = entry.load()
    assert module.RemoteRenderingCredentials.get_block_type_slug() == (
        "remote-rendering-credentials"
    )
