"""Griffe extension: Sphinx roles in docstrings read as code on the site.

The package's docstrings cross-reference with Sphinx roles (``:class:`ArrClient```,
``:func:`~arr_prefect.flows.rendering_session```), which mkdocstrings' Markdown would show
as ``:class: ArrClient``. They become inline code, the last dotted part only with ``~``,
as Sphinx shows them.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|exc|data|obj):`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``text`` with every Sphinx role turned into inline code."""

    def code(match: re.Match[str]) -> str:
        target = match[2].lstrip(".")
        return f"`{target.rsplit('.', 1)[-1] if match[1] else target}`"

    return ROLE.sub(code, text)


class SphinxRolesAsCode(griffe.Extension):
    """Rewrites each loaded object's docstring before it is parsed."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
