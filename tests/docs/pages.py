"""The documentation's pages and their code blocks, for the tests that keep them true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def page(name: str) -> str:
    """The Markdown of ``docs/<name>`` (``README.md`` for the README)."""
    return (README if name == "README.md" else DOCS / name).read_text()


def pages() -> list[str]:
    """Every page of the site, and the README: names as :func:`page` takes them."""
    return ["README.md", *sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))]


def code_blocks(name: str, language: str) -> list[str]:
    """The fenced blocks of one page in ``language`` (```python, ```bash...), in order."""
    return [body for lang, body in _FENCE.findall(page(name)) if lang == language]


def example_with(text: str, language: str = "python") -> str:
    """The one code block, on any page, that contains ``text``."""
    found = [b for name in pages() for b in code_blocks(name, language) if text in b]
    assert len(found) == 1, f"{len(found)} {language} examples contain {text!r}"
    return found[0]


def section(name: str, heading: str) -> str:
    """The text of page ``name`` under the heading line ``heading`` (e.g. ``"## A real
    run"``), up to the next heading of the same or a higher level outside code blocks."""
    lines = page(name).split("\n")
    start = lines.index(heading) + 1
    level = len(heading.split(" ", 1)[0])
    fenced = False
    for end in range(start, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])
