"""`reference_markdown()`: the `arr` reference page, generated from the application."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
import typer
import typer.main

from arr_prefect.cli import app, reference_markdown
from arr_prefect.cli import commands as cli_commands
from arr_prefect.cli.invocation import EXIT_STATUSES
from arr_prefect.cli.options import CONFIG_PANEL, shared_options


def walk(command: Any, path: str = "arr") -> Iterator[tuple[str, Any]]:
    """(command line, click command) for `command` and every command below it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, f"{path} {name}")


def sections(page: str) -> dict[str, str]:
    """The page's `##` sections by heading, backticks removed."""
    found = {}
    for chunk in page.split("\n## ")[1:]:
        heading, _, body = chunk.partition("\n")
        found[heading.strip("`")] = body
    return found


def _is_config(param: Any) -> bool:
    return getattr(param, "rich_help_panel", None) == CONFIG_PANEL


def unescaped(markdown: str) -> str:
    """Markdown text with its backslash escapes undone."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_reference_lists_every_command_and_option() -> None:
    """Each command of the app has a section naming each of its arguments and options; each
    configuration option is described (its help) in the configuration section."""
    page = reference_markdown()
    by_heading = sections(page)
    config_section = by_heading["Configuration options"]
    checked = 0
    for path, command in walk(typer.main.get_command(app)):
        section = by_heading[path]
        assert f"Usage: `{path} " in section
        for param in command.params:
            if param.param_type_name == "argument":
                assert f"| `{param.metavar}` |" in section, (path, param.name)
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                assert f"`{opt}`" in section, (path, opt)
            where = config_section if _is_config(param) else section
            row = next(r for r in where.splitlines() if r.startswith(f"| `{param.opts[0]}`"))
            assert " ".join(param.help.split()) in unescaped(row), (path, param.name)
            checked += 1
    assert checked > 40  # 8 shared options on 7 commands, and each command's own
    assert "`--help`" in page


def test_a_new_option_appears_by_itself() -> None:
    """An option the reference was never told about is in it: the page is read from the
    app, not written by hand."""
    toy = typer.Typer(name="toy")

    @shared_options
    def frobnicate(
        ctx: typer.Context,
        level: Annotated[int, typer.Option("--level", help="How hard to frobnicate.")] = 1,
    ) -> None:
        """Frobnicate the sessions."""

    toy.callback()(cli_commands.root)
    toy.command()(frobnicate)
    page = reference_markdown(toy)
    section = sections(page)["arr frobnicate"]
    # The value's name is Typer's (INTEGER from 0.29, LEVEL before): not what is checked.
    [row] = [line for line in section.splitlines() if line.startswith("| `--level` |")]
    assert row.endswith("| How hard to frobnicate. |"), row
    assert "Frobnicate the sessions." in section


def test_reference_lists_every_exit_status() -> None:
    """Each EXIT_* status of `arr` is in the exit status table."""
    statuses = {v for k, v in vars(cli_commands).items() if k.startswith("EXIT_")}
    table = sections(reference_markdown())["Exit status"]
    assert statuses == {code for code, _ in EXIT_STATUSES}
    for code in statuses:
        assert re.search(rf"^\| {code} \| \w", table, re.M), code


def test_reference_renders_and_every_link_lands() -> None:
    """As Markdown (tables, headings with ids as MkDocs makes them): every in-page link
    has its heading, no cell is split by a stray `|`, no reStructuredText markup is left."""
    markdown = pytest.importorskip("markdown")
    page = reference_markdown()
    html = markdown.markdown(page, extensions=["tables", "toc"])
    ids = set(re.findall(r'<h[12] id="([^"]+)"', html))
    links = set(re.findall(r'href="#([^"]+)"', html))
    assert links
    assert links <= ids, links - ids
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        assert row.count("<td>") in (0, 2, 3), row
    assert "``" not in page
