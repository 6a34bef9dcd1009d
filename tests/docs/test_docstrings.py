"""The reference's public functions say what they take and what they give back.

Each public function of ``arr_prefect``, ``arr_prefect.tasks`` and ``arr_prefect.flows``
(their ``__all__``) has an ``Args:`` section when it takes parameters and a ``Returns:``
(or ``Yields:``) section when it returns something, read as the site reads them (griffe,
Google style). ``NOT_YET`` lists the ones still missing a section, in files other work is
changing now; the list may only shrink: a name that gains its sections must leave it.
"""

from __future__ import annotations

import importlib
from typing import Any

import griffe
import pytest

from tests.docs.pages import ROOT

MODULES = ("arr_prefect", "arr_prefect.tasks", "arr_prefect.flows")

NOT_YET: set[str] = set()  # every public function has its sections now


def _functions() -> list[tuple[str, Any]]:
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)], docstring_parser=griffe.Parser.google)
    found = []
    for name in MODULES:
        package = loader.load(name)
        loader.resolve_aliases(implicit=False, external=False)
        for public in importlib.import_module(name).__all__:
            obj = package[public]
            obj = obj.final_target if obj.is_alias else obj
            if obj.is_module:  # a name shared with its module (flows.render_batch)
                obj = obj.members[public]
                obj = obj.final_target if obj.is_alias else obj
            if obj.is_function:
                found.append((f"{name}.{public}", obj))
    return found


def _missing(function: Any) -> list[str]:
    sections = {s.kind.value for s in function.docstring.parsed} if function.docstring else set()
    missing = []
    if [p for p in function.parameters if p.name not in ("self", "cls")] and (
        "parameters" not in sections
    ):
        missing.append("Args")
    returns = str(function.returns) if function.returns is not None else "None"
    if returns != "None" and not sections & {"returns", "yields"}:
        missing.append("Returns")
    return missing


FUNCTIONS = _functions()


@pytest.mark.parametrize(("name", "function"), [pytest.param(n, f, id=n) for n, f in FUNCTIONS])
def test_public_function_documents_args_and_returns(name: str, function: Any) -> None:
    """The function's docstring has the sections its signature calls for (or it is on the
    shrinking NOT_YET list, and still lacks one)."""
    missing = _missing(function)
    if name in NOT_YET:
        assert missing, f"{name} has its sections now: take it off NOT_YET"
    else:
        assert missing == [], f"{name}'s docstring lacks {', '.join(missing)}"


def test_not_yet_names_are_public_functions() -> None:
    """Every NOT_YET entry is a public function (a renamed one cannot linger)."""
    assert NOT_YET - {name for name, _ in FUNCTIONS} == set()
