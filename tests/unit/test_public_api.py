"""The public surface: explicit, sorted __all__ lists whose names all exist."""

from __future__ import annotations

import importlib

import pytest

import arr_prefect


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


MODULES = [
    "arr_prefect",
    "arr_prefect.auth",
    "arr_prefect.client",
    "arr_prefect.clock",
    "arr_prefect.credentials",
    "arr_prefect.errors",
    "arr_prefect.models",
    "arr_prefect.settings",
]


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in arr_prefect.__all__])
def test_package_name_is_importable(name: str) -> None:
    """Every name in arr_prefect.__all__ can be imported from the package."""
    namespace: dict[str, object] = {}
    exec(f"from arr_prefect import {name}", namespace)  # noqa: S102  # the import is the test
    assert namespace[name] is getattr(arr_prefect, name)


@pytest.mark.parametrize("module", [pytest.param(m, id=m) for m in MODULES])
def test_all_is_sorted_and_unique(module: str) -> None:
    """__all__ is sorted (constants, classes, functions) without duplicates."""
    names = list(importlib.import_module(module).__all__)
    assert names == sorted(names, key=_isort_key)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("module", [pytest.param(m, id=m) for m in MODULES])
def test_all_names_exist(module: str) -> None:
    """Every name a module lists in __all__ is defined in it."""
    loaded = importlib.import_module(module)
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert missing == []


def test_client_names() -> None:
    """The client module exports the client, its factory helpers and new_session_id."""
    from arr_prefect import client

    assert set(client.__all__) >= {"ArrClient", "new_session_id", "open_client"}
    assert callable(client.ArrClient)


def test_errors_are_all_exported_from_the_package() -> None:
    """Every exception the package defines is importable from the package itself."""
    from arr_prefect import errors

    exceptions = {
        name
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), BaseException)
    }
    assert exceptions <= set(arr_prefect.__all__)
