"""The ``arr`` reference as Markdown, read from the application itself.

:func:`reference_markdown` walks the command tree Typer builds (the one ``--help`` reads):
every command, argument and option, with the help text the code declares, so the
documentation cannot drift from the CLI. The configuration options every command takes
are described once, in their own section, and named in each command's.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import typer
import typer.main

from arr_prefect.cli.invocation import EXIT_STATUSES
from arr_prefect.cli.options import CONFIG_PANEL

__all__ = ["reference_markdown"]

_CONFIG_HEADING = "Configuration options"
_CONFIG_ANCHOR = "configuration-options"  # the heading's slug, as MkDocs makes it
_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER"}
_MARKDOWN_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_<>[]|"})


def _text(value: str | None) -> str:
    """Help text as Markdown prose: characters Markdown would read as markup escaped."""
    return inspect.cleandoc(value or "").translate(_MARKDOWN_SPECIAL)


def _cell(value: str | None) -> str:
    """Help text in one table cell: one line."""
    return " ".join(_text(value).split())


def _code(value: str) -> str:
    """A literal (an option, a command line) as inline code."""
    return f"`{value}`"


def _anchor(path: str) -> str:
    """The slug MkDocs gives the heading of the command ``path``."""
    return path.replace(" ", "-")


def _walk(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """(command, context) for ``command`` and every command below it, in help order."""
    yield command, ctx
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            yield from _walk(sub, sub.context_class(sub, info_name=name, parent=ctx))


def _value(param: Any, ctx: Any) -> str:
    """What an option or argument takes, as ``--help`` shows it, each choice as code
    (``v1`` or ``2021-01-01``); nothing for a flag. A ``|`` is never put in a table cell,
    where Markdown dialects disagree on how to escape it."""
    if getattr(param, "is_flag", False):
        return ""
    display = getattr(param, "display_type_rich", None)
    shown = str(param.metavar or (display(ctx=ctx) if display is not None else "") or "")
    if shown.startswith("<") and shown.endswith(">"):  # Typer's <str>, <v1|2021-01-01>
        shown = shown[1:-1]
    shown = _TYPE_NAMES.get(shown, shown) or param.name.upper()
    return " or ".join(_code(choice) for choice in shown.split("|"))


def _options_table(params: list[Any], ctx: Any) -> list[str]:
    rows = ["| Option | Value | Description |", "|---|---|---|"]
    for param in params:
        names = ", ".join(_code(name) for name in [*param.opts, *param.secondary_opts])
        rows.append(f"| {names} | {_value(param, ctx)} | {_cell(param.help)} |")
    return rows


def _arguments_table(params: list[Any]) -> list[str]:
    rows = ["| Argument | Description |", "|---|---|"]
    for param in params:
        needed = "required" if param.required else "optional"
        name = _code(param.metavar or param.name.upper())
        rows.append(f"| {name} | {_cell(param.help)} ({needed}) |")
    return rows


def _is_config(param: Any) -> bool:
    return getattr(param, "rich_help_panel", None) == CONFIG_PANEL


def _command_section(command: Any, ctx: Any) -> list[str]:
    """One command: usage, help, arguments, options, and its subcommands."""
    path = ctx.command_path
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    lines = [f"## `{path}`", "", f"Usage: {_code(usage)}", "", _text(command.help), ""]
    visible = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in visible if p.param_type_name == "argument"]
    options = [p for p in visible if p.param_type_name == "option" and not _is_config(p)]
    config = [p for p in visible if p.param_type_name == "option" and _is_config(p)]
    if arguments:
        lines += [*_arguments_table(arguments), ""]
    if options:
        lines += [*_options_table(options, ctx), ""]
    if config:
        names = ", ".join(_code(name) for p in config for name in p.opts)
        lines += [f"Also the [configuration options](#{_CONFIG_ANCHOR}): {names}.", ""]
    subcommands = [
        f"[{_code(f'{path} {name}')}](#{_anchor(f'{path} {name}')})"
        for name in getattr(command, "list_commands", lambda _ctx: [])(ctx)
    ]
    if subcommands:
        lines += [f"Commands: {', '.join(subcommands)}.", ""]
    return lines


def reference_markdown(app: typer.Typer | None = None) -> str:
    """Every command, argument and option of ``arr``, and its exit statuses, as Markdown.

    Read from the application Typer builds, the same tree ``--help`` prints, so a new
    option appears here by itself. The page has one ``#`` title, a section for the
    configuration options every command takes, one ``##`` section per command (its
    heading is the command line, e.g. ``arr sessions create``), and the exit statuses.

    Args:
        app: The Typer application to describe (default: ``arr`` as installed).

    Returns:
        The page, Markdown text ending in a newline.
    """
    if app is None:
        from arr_prefect.cli.commands import app as installed

        app = installed
    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="arr")
    walked = list(_walk(root, root_ctx))
    config = [p for p in root.params if _is_config(p)]
    lines = [
        "# `arr` command reference",
        "",
        _text(root.help),
        "",
        "`-h` or `--help` after any command prints its help.",
        "",
        f"## {_CONFIG_HEADING}",
        "",
        "Every command takes these, before the command (`arr --json sessions list`) or"
        " after it (`arr sessions list --json`); when both give one, the command's wins."
        " Where the settings come from, highest first: these flags, `--block`, the"
        " `ARR_*` environment variables and `.env`, then `--config`.",
        "",
        *_options_table(config, root_ctx),
        "",
    ]
    for command, ctx in walked:
        lines += _command_section(command, ctx)
    lines += ["## Exit status", "", "| Status | Meaning |", "|---|---|"]
    lines += [f"| {code} | {_cell(meaning)} |" for code, meaning in EXIT_STATUSES]
    return "\n".join(lines) + "\n"
