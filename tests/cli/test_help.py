"""What `arr --help` and `arr --version` print, and the options every command shares."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from arr_prefect.cli import app
from arr_prefect.cli.options import CONFIG_PANEL, shared_options

RUNNER = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})


def command_paths() -> Iterator[tuple[list[str], Any]]:
    """(argv of the command, its click command) for `arr` and every command below it."""

    def walk(path: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk([*path, name], sub)

    return walk([], typer.main.get_command(app))


COMMANDS = [
    pytest.param(path, command, id=" ".join(["arr", *path])) for path, command in command_paths()
]


@pytest.mark.parametrize(("path", "command"), COMMANDS)
def test_help_shows_no_type_beside_a_flag(path: list[str], command: Any) -> None:
    """A flag takes no value: its line in --help has no `<bool>`, and the flag is there."""
    result = RUNNER.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    flags = [p for p in command.params if getattr(p, "is_flag", False)]
    for flag in flags:
        assert flag.opts[0] in result.output


@pytest.mark.parametrize(("path", "command"), COMMANDS)
def test_help_is_plain_text(path: list[str], command: Any) -> None:
    """No reStructuredText markup (double backticks, roles) reaches a person's --help."""
    output = RUNNER.invoke(app, [*path, "--help"]).output
    assert "``" not in output
    assert ":func:" not in output
    assert ":class:" not in output


def test_version_prints_the_distribution_version() -> None:
    """`arr --version` prints `arr-prefect <version>` from the installed metadata, exit 0."""
    result = RUNNER.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"arr-prefect {metadata.version('arr-prefect')}\n"


def test_optional_session_id_is_shown_once_bracketed() -> None:
    """`stop`'s optional ID reads `[ID]` in the usage line, not `[[ID]]`."""
    usage = RUNNER.invoke(app, ["sessions", "stop", "--help"]).output
    assert "arr sessions stop [OPTIONS] [ID]" in usage


@pytest.mark.parametrize(("path", "command"), COMMANDS)
def test_every_command_takes_the_shared_options(path: list[str], command: Any) -> None:
    """Each command but the `sessions` group takes the configuration options and --json,
    all of them, declared once by shared_options."""
    root = typer.main.get_command(app)
    shared = {p.name for p in root.params if getattr(p, "rich_help_panel", None) == CONFIG_PANEL}
    shared.add("as_json")
    names = {p.name for p in command.params}
    if path == ["sessions"]:
        assert not names & shared
    else:
        assert shared <= names


def test_shared_options_needs_the_context_first() -> None:
    """shared_options refuses a command that does not take `ctx: typer.Context` first:
    it would have nowhere to put the options."""

    def no_context(size: int = 1) -> None:
        """A command without a context."""

    with pytest.raises(TypeError, match=r"ctx: typer\.Context first"):
        shared_options(no_context)


def test_command_options_win_over_the_group_s() -> None:
    """`arr --api-version v1 sessions list --api-version 2021-01-01`: the command's wins;
    a command that leaves an option out keeps the group's."""
    seen: list[Any] = []

    @shared_options
    def probe(ctx: typer.Context) -> None:
        """Record the options the command sees."""
        seen.append(ctx.obj.options)

    probe_app = typer.Typer()
    probe_app.callback()(shared_options(_group_callback))
    probe_app.command()(probe)
    result = RUNNER.invoke(
        probe_app,
        ["--api-version", "v1", "--region", "westus2", "probe", "--api-version", "2021-01-01"],
    )
    assert result.exit_code == 0, result.output
    [options] = seen
    assert (options.api_version, options.region) == ("2021-01-01", "westus2")


def _group_callback(ctx: typer.Context) -> None:
    """The group: takes the shared options too."""
