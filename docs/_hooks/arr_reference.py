"""MkDocs hook: the `arr` page's command reference, generated from the CLI itself.

The page ``arr.md`` holds the marker ``<!-- arr-reference -->``; this hook replaces it with
``arr_prefect.cli.reference_markdown()`` when the CLI provides it, else with the same
reference read here from the Typer app's click command tree. Either way the reference is
what ``arr --help`` knows, never a copy that can drift from it.
"""

from __future__ import annotations

import enum
import pathlib
from typing import Any

import typer
import typer.main

MARKER = "<!-- arr-reference -->"
PAGE = "arr.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the generated reference where the `arr` page asks for it."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} marker: the arr reference has nowhere to go")
    return markdown.replace(MARKER, arr_reference())


def arr_reference() -> str:
    """The reference of every `arr` command and option, in Markdown."""
    import arr_prefect.cli as cli

    own = getattr(cli, "reference_markdown", None)
    if callable(own):
        return str(own())
    return reference_from_click(typer.main.get_command(cli.app), "arr")


def reference_from_click(root: Any, name: str) -> str:
    """Markdown for ``root`` and every command under it: usage, help, arguments, options.

    ``root`` is a click command as ``typer.main.get_command`` builds it (Typer carries its
    own copy of click, so commands are told apart by what they have, not by class). The
    options every command shares with ``root`` are listed once, under ``root``.
    """
    shared = {p.name for p in root.params if _is_option(p)}
    parts: list[str] = []
    for path, command in _walk(root, [name]):
        parts.append(_command(path, command, shared if command is not root else set()))
    return "\n".join(parts)


def _is_option(param: Any) -> bool:
    return bool(param.param_type_name == "option")


def _is_argument(param: Any) -> bool:
    return bool(param.param_type_name == "argument")


def _subcommands(command: Any) -> dict[str, Any]:
    return dict(getattr(command, "commands", None) or {})


def _walk(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, command)]
    for sub_name, sub in _subcommands(command).items():
        if not sub.hidden:
            found += _walk(sub, [*path, sub_name])
    return found


def _command(path: list[str], command: Any, shared: set[str | None]) -> str:
    title = " ".join(path)
    ctx = typer.Context(command, info_name=title)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"### `{title}`", "", f"```\n{title} {usage}\n```", ""]
    if command.help:
        lines += [_plain(command.help), ""]
    arguments = [p for p in command.params if _is_argument(p)]
    if arguments:
        lines += ["| argument | |", "|---|---|"]
        for argument in arguments:
            lines.append(f"| {_metavar(argument)} | {_cell(getattr(argument, 'help', None) or '')} |")
        lines.append("")
    options = [
        p
        for p in command.params
        if _is_option(p) and not p.hidden and p.name not in shared
    ]
    if options:
        lines += ["| option | meaning | default |", "|---|---|---|"]
        for option in options:
            lines.append(f"| {_option_names(option)} | {_cell(option.help or '')} | {_default(option)} |")
        lines.append("")
    if shared:
        lines += [f"Also takes the account options of [`{path[0]}`](#{path[0]}).", ""]
    if _subcommands(command):
        subs = [f"[`{title} {n}`](#{_anchor(f'{title} {n}')})" for n in _subcommands(command)]
        lines += ["Commands: " + ", ".join(subs) + ".", ""]
    return "\n".join(lines)


def _option_names(option: Any) -> str:
    names = ", ".join(f"`{n}`" for n in option.opts)
    # The flag's value type is not shown: a flag takes no value (`--wait`, not `--wait <bool>`).
    if option.secondary_opts:
        names += " / " + ", ".join(f"`{n}`" for n in option.secondary_opts)
    if option.is_flag:
        return names
    return f"{names} {_metavar(option)}"


def _metavar(param: Any) -> str:
    """What the value looks like, in Markdown: the declared metavar, else the choices
    (`v1` or `2021-01-01`: a table cell cannot hold click's `[v1|2021-01-01]`) or the type."""
    if param.metavar:
        return f"`{param.metavar}`"
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    names = {int: "INTEGER", float: "NUMBER", pathlib.Path: "PATH"}
    return f"`{names.get(annotation, 'TEXT') if isinstance(annotation, type) else 'TEXT'}`"


def _default(option: Any) -> str:
    value = option.default
    if option.is_flag and value is False:
        return "off"
    if value is None or value == () or callable(value):
        return ""
    return f"`{value}`"


def _anchor(title: str) -> str:
    return title.replace(" ", "-").lower()


def _plain(text: str) -> str:
    """Help text as Markdown: click's ``\\b`` paragraph markers dropped."""
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b")


def _cell(text: str) -> str:
    return " ".join(_plain(text).split()).replace("|", "\\|")
