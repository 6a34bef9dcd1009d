"""The options every ``arr`` command shares, declared once: :func:`shared_options`.

The configuration options (``--account-id`` ... ``--config``) and ``--json`` may be given
before the command (``arr --json sessions list``) or after it (``arr sessions list
--json``); the command's own win over the group's (:meth:`SharedOptions.under`).

Also here: the command classes that keep Typer from printing ``<bool>`` beside a flag in
``--help`` (a flag takes no value, so it has no type to show).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from arr_prefect.cli.config import BlockLoader, ConfigSources, account_domain_fields
from arr_prefect.client import ArrClient
from arr_prefect.models import ApiVersion
from arr_prefect.settings import ArrSettings

__all__ = [
    "CONFIG_PANEL",
    "ArrCommand",
    "ArrGroup",
    "ClientBuilder",
    "Scope",
    "SharedOptions",
    "Wiring",
    "load_saved_block",
    "scope_of",
    "shared_options",
]

CONFIG_PANEL = "Configuration (highest first: flags, --block, ARR_* / .env, --config)"
"""The help panel of the configuration options (the reference's "Configuration options")."""

ClientBuilder = Callable[[ArrSettings], ArrClient]
"""Builds the client for resolved settings; tests inject one with an in-process transport."""


AccountIdOpt = Annotated[
    str | None,
    typer.Option("--account-id", help="The account's GUID.", rich_help_panel=CONFIG_PANEL),
]
AccountDomainOpt = Annotated[
    str | None,
    typer.Option(
        "--account-domain",
        help="The account's domain (token service): a region such as westus2, a domain such"
        " as westus2.mixedreality.azure.com, or a full URL.",
        rich_help_panel=CONFIG_PANEL,
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option(
        "--region", help="The session API's region, e.g. westus2.", rich_help_panel=CONFIG_PANEL
    ),
]
ServiceUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--service-url",
        help="The session API's base URL (plain http only on loopback, e.g. arr-emulator).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
ApiVersionOpt = Annotated[
    ApiVersion | None,
    typer.Option(
        "--api-version",
        help="The session API version (default: ARR_API_VERSION, else v1).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
BlockOpt = Annotated[
    str | None,
    typer.Option(
        "--block",
        metavar="NAME",
        help="A saved RemoteRenderingCredentials block (needs the Prefect API).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="ARRCONFIG.JSON",
        help="The vendor's arrconfig.json (accountSettings, renderingSessionSettings).",
        dir_okay=False,
        rich_help_panel=CONFIG_PANEL,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="One JSON document on stdout (2021-01-01 property names)."),
]


@dataclass(frozen=True)
class SharedOptions:
    """The configuration options and ``--json``, given before or after the command."""

    account_id: str | None = None
    account_domain: str | None = None
    region: str | None = None
    service_url: str | None = None
    api_version: ApiVersion | None = None
    block: str | None = None
    config: Path | None = None
    as_json: bool = False

    def under(self, leaf: SharedOptions) -> SharedOptions:
        """These options (the group's), overridden by the command's own."""
        changes: dict[str, Any] = {
            f.name: getattr(leaf, f.name)
            for f in fields(leaf)
            if getattr(leaf, f.name) not in (None, False)
        }
        return replace(self, **changes)

    def sources(self) -> ConfigSources:
        """The flags among these options, the block and the config file, for the resolver."""
        flags: dict[str, Any] = {}
        if self.account_id is not None:
            flags["account_id"] = self.account_id
        if self.account_domain is not None:
            flags.update(account_domain_fields(self.account_domain, "--account-domain"))
        if self.region is not None:
            flags["region"] = self.region
        if self.service_url is not None:
            flags["service_url"] = self.service_url
        if self.api_version is not None:
            flags["api_version"] = self.api_version
        return ConfigSources(flags=flags, block=self.block, config_file=self.config)


# Each field of SharedOptions as the command-line parameter Typer reads; keyword-only, so
# they follow a command's own parameters in the signature and in --help.
_SHARED_PARAMETERS = tuple(
    inspect.Parameter(
        field.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=field.default
    )
    for field, annotation in zip(
        fields(SharedOptions),
        (
            AccountIdOpt,
            AccountDomainOpt,
            RegionOpt,
            ServiceUrlOpt,
            ApiVersionOpt,
            BlockOpt,
            ConfigOpt,
            JsonOpt,
        ),
        strict=True,
    )
)


def load_saved_block(name: str) -> dict[str, Any]:
    """The account of a saved credentials block (imports Prefect, so only on demand)."""
    from arr_prefect.cli.blocks import settings_from_block

    return settings_from_block(name)


@dataclass(frozen=True)
class Wiring:
    """What :func:`~arr_prefect.cli.build_app` was given: how to build the client for the
    resolved settings, and how to turn ``--block NAME`` into settings fields."""

    client_for: ClientBuilder = ArrClient
    load_block: BlockLoader = load_saved_block


@dataclass(frozen=True)
class Scope:
    """``ctx.obj`` of every ``arr`` context: the app's wiring and the options so far
    (the group's, then the command's over them)."""

    wiring: Wiring
    options: SharedOptions = SharedOptions()


def scope_of(ctx: typer.Context) -> Scope:
    """The scope of a context (the default wiring when a caller gave its own ``obj``)."""
    return ctx.obj if isinstance(ctx.obj, Scope) else Scope(Wiring())


def shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the configuration options and ``--json``, declared here once.

    Typer reads a command's options from its signature: the returned function's signature
    is the command's own followed by the shared options. When it runs, it takes them out,
    lays them over the group's (``ctx.obj``, a :class:`Scope`) and calls ``command``
    without them; the command reads the result from ``scope_of(ctx).options``.

    Args:
        command: A Typer command or callback whose first parameter is ``ctx: typer.Context``.

    Returns:
        The command, as Typer should register it.

    Raises:
        TypeError: ``command`` does not take ``ctx: typer.Context`` first.
    """
    signature = inspect.signature(command, eval_str=True)
    own = list(signature.parameters.values())
    if not own or own[0].name != "ctx" or own[0].annotation is not typer.Context:
        raise TypeError(f"{command.__name__} must take ctx: typer.Context first")

    @functools.wraps(command)
    def with_shared_options(*args: Any, **kwargs: Any) -> None:
        leaf = SharedOptions(**{p.name: kwargs.pop(p.name) for p in _SHARED_PARAMETERS})
        ctx: typer.Context = kwargs["ctx"] if "ctx" in kwargs else args[0]
        scope = scope_of(ctx)
        ctx.obj = replace(scope, options=scope.options.under(leaf))
        command(*args, **kwargs)

    # inspect.signature (hence Typer) reads __signature__ before anything else; mypy does
    # not know functions may carry one.
    with_shared_options.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*own, *_SHARED_PARAMETERS]
    )
    return with_shared_options


def _without_flag_types(params: list[Any]) -> list[Any]:
    """The params, each flag given an empty metavar: Typer 0.29 otherwise shows ``<bool>``
    beside a flag in ``--help``, though a flag takes no value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class ArrCommand(TyperCommand):
    """A Typer command whose help shows no type beside a flag."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


class ArrGroup(TyperGroup):
    """A Typer group whose help shows no type beside a flag."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))
