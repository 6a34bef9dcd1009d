"""``arr``: the operators' command line, on the core client (:mod:`arr_prefect.cli.commands`).

:func:`reference_markdown` prints its reference (every command and option) as Markdown.
"""

from __future__ import annotations

from arr_prefect.cli.commands import app, build_app, main
from arr_prefect.cli.reference import reference_markdown

__all__ = ["app", "build_app", "main", "reference_markdown"]
