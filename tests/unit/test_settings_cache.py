"""load_settings remembers what it built, and sees every change to what it reads at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from arr_prefect import settings as settings_module
from arr_prefect.errors import ConfigurationError
from arr_prefect.settings import load_settings

ACCOUNT_ID = "7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5a"


@pytest.fixture(autouse=True)
def _no_arr_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's ARR_* variables, a working directory without a .env file, and
    nothing remembered from another test."""
    for name in list(os.environ):
        if name.upper().startswith("ARR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings_module, "_built", {})


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per settings object actually built (not taken from what was remembered)."""
    built: list[bool] = []
    real = settings_module.ArrSettings.__init__

    def counting(self: settings_module.ArrSettings, **values: Any) -> None:
        built.append(True)
        real(self, **values)

    monkeypatch.setattr(settings_module.ArrSettings, "__init__", counting)
    return built


def test_the_same_reads_are_built_once(builds: list[bool]) -> None:
    """Asked twice with nothing changed, settings are built once."""
    load_settings(region="westeurope")
    load_settings(region="westeurope")
    assert len(builds) == 1


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("ARR_REGION", id="upper-case"),
        pytest.param("arr_region", id="lower-case"),
    ],
)
def test_a_changed_variable_is_seen_at_once(
    monkeypatch: pytest.MonkeyPatch, builds: list[bool], name: str
) -> None:
    """An ARR_* variable set, changed or removed after a call is seen by the next one."""
    assert load_settings().region is None
    monkeypatch.setenv(name, "uksouth")
    assert load_settings().region == "uksouth"
    monkeypatch.setenv(name, "eastus")
    assert load_settings().region == "eastus"
    monkeypatch.delenv(name)
    assert load_settings().region is None
    assert len(builds) == 3  # the first read again, without the variable: remembered


def test_a_new_env_file_is_seen_at_once(tmp_path: Path) -> None:
    """A .env file written in the working directory after a call is read by the next."""
    assert load_settings().region is None
    (tmp_path / ".env").write_text("ARR_REGION=westeurope\n", encoding="utf-8")
    assert load_settings().region == "westeurope"


def test_a_changed_env_file_is_seen_at_once(tmp_path: Path) -> None:
    """.env rewritten with contents of the same size is read again (its time changed)."""
    env = tmp_path / ".env"
    env.write_text("ARR_REGION=westus2\n", encoding="utf-8")
    os.utime(env, ns=(1_000_000_000, 1_000_000_000))
    assert load_settings().region == "westus2"
    env.write_text("ARR_REGION=uksouth\n", encoding="utf-8")  # same size
    os.utime(env, ns=(2_000_000_000, 2_000_000_000))
    assert load_settings().region == "uksouth"


def test_another_working_directory_has_its_own_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.env is found from the current directory, as pydantic-settings finds it."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, region in ((first, "eastus"), (second, "uksouth")):
        folder.mkdir()
        (folder / ".env").write_text(f"ARR_REGION={region}\n", encoding="utf-8")
    monkeypatch.chdir(first)
    assert load_settings().region == "eastus"
    monkeypatch.chdir(second)
    assert load_settings().region == "uksouth"


def test_overrides_are_part_of_what_is_remembered() -> None:
    """Other overrides, other settings: each keyword set is remembered apart."""
    assert load_settings(region="eastus").region == "eastus"
    assert load_settings(region="uksouth").region == "uksouth"
    assert load_settings(_env_file=None).region is None


def test_each_caller_gets_its_own_copy() -> None:
    """Changing a field of the settings one caller got changes nobody else's."""
    load_settings(account_id=ACCOUNT_ID)  # now remembered
    first = load_settings(account_id=ACCOUNT_ID)
    first.region = "uksouth"
    second = load_settings(account_id=ACCOUNT_ID)
    assert second is not first
    assert second.region is None


def test_invalid_settings_raise_every_time() -> None:
    """A configuration error is raised on every call, never remembered as settings."""
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="ARR_REGION"):
            load_settings(region="atlantis")
