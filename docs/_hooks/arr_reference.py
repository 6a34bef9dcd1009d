"""MkDocs hook: the `arr` reference page, generated from the command line itself.

``arr-reference.md`` holds only the marker ``<!-- arr-reference -->``; this hook puts
``arr_prefect.cli.reference_markdown()`` in its place (every command, argument and option,
read from the Typer app that ``arr --help`` reads), so the page cannot drift from the CLI.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- arr-reference -->"
PAGE = "arr-reference.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the generated reference where the `arr` reference page asks for it."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} marker: the arr reference has nowhere to go")
    from arr_prefect.cli import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
