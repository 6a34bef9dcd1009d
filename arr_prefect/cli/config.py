"""Where ``arr`` gets its settings, highest first:

1. flags: ``--account-id``, ``--account-domain``, ``--region``, ``--service-url``,
   ``--api-version``;
2. ``--block NAME``: a saved ``RemoteRenderingCredentials`` block, whose account fields
   all come from the block (:func:`arr_prefect.credentials.settings_from_block`);
3. ``ARR_*`` environment variables and ``.env`` (:class:`~arr_prefect.ArrSettings`);
4. ``--config arrconfig.json``, the file of the vendor's ``RenderingSession.ps1``.

An endpoint is taken whole from the highest source that names it: a ``--region`` flag
replaces an ``ARR_SERVICE_URL`` from the environment rather than losing to it, because the
explicit URL would otherwise win inside the settings. The session API's endpoint is
(``region``, ``service_url``); the token service's is (``account_domain``, ``sts_url``).

``arrconfig.json`` as the vendor's template writes it::

    {
      "accountSettings": {
        "arrAccountId": "<fill in the account ID from the Azure Portal>",
        "arrAccountKey": "<fill in the account key from the Azure Portal>",
        "arrAccountDomain": "<select from available regions: ... or specify the full url>"
      },
      "renderingSessionSettings": {
        "remoteRenderingDomain": "<select from available regions: ... or specify the full url>",
        "vmSize": "<standard or premium>",
        "maxLeaseTime": "<hh:mm:ss>"
      },
      "assetConversionSettings": { ... }
    }

A value still reading ``<...>`` is the template's placeholder: not filled in. The domain
fields take what the script's ``ToDomain`` takes: a region name (``westus2``), optionally
with ``https://`` before it or ``.mixedreality.azure.com`` after it, which becomes
``https://sts.<region>.mixedreality.azure.com`` (account) or
``https://remoterendering.<region>.mixedreality.azure.com`` (sessions); or a full URL
(``https://remoterendering.japaneast.mixedreality.azure.com``), used as it is. A bare
domain of another cloud (``myregion.mixedreality.example``) is read as the SDKs read their
``AccountDomain``/``RemoteRenderingDomain``: ``sts.<domain>`` and ``remoterendering.<domain>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from arr_prefect.cli.durations import parse_duration
from arr_prefect.errors import ConfigurationError, InvalidInputError
from arr_prefect.models import SessionSize
from arr_prefect.settings import REGIONS, ArrSettings, load_settings

__all__ = [
    "ArrConfigFile",
    "ConfigSources",
    "account_domain_fields",
    "read_arrconfig",
    "rendering_domain_fields",
    "resolve_settings",
]

_SUFFIX = ".mixedreality.azure.com"
_TO_DOMAIN = re.compile(r"^(?:https://)?(?P<region>.*?)(?:\.mixedreality\.azure\.com)?$", re.I)
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")

SERVICE_ENDPOINT = ("region", "service_url")
STS_ENDPOINT = ("account_domain", "sts_url")
_GROUPS = (SERVICE_ENDPOINT, STS_ENDPOINT)

# Settings a source may carry (the rest, timeouts and prices, come from ARR_* only).
SETTING_NAMES = ("account_id", "account_key", *SERVICE_ENDPOINT, *STS_ENDPOINT, "api_version")


def _public_region(value: str) -> str | None:
    """The region a domain field names, the way the vendor's ``ToDomain`` finds it."""
    match = _TO_DOMAIN.match(value.strip())
    region = match["region"].lower() if match else ""
    return region if region in REGIONS else None


def _domain_error(what: str, value: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} {value!r} is neither a region ({', '.join(REGIONS)}) nor a full URL (https://...)"
    )


def account_domain_fields(value: str, what: str = "account domain") -> dict[str, str | None]:
    """Settings for an account domain given as a region, a domain or the STS's full URL."""
    region = _public_region(value)
    text = value.strip()
    if region is not None:
        return {"account_domain": f"{region}{_SUFFIX}", "sts_url": None}
    if "://" in text:
        return {"account_domain": None, "sts_url": text}
    if _HOST.match(text):
        return {"account_domain": text, "sts_url": None}
    raise _domain_error(what, value)


def rendering_domain_fields(value: str, what: str = "rendering domain") -> dict[str, str | None]:
    """Settings for a session API domain given as a region, a domain or its full URL."""
    region = _public_region(value)
    text = value.strip()
    if region is not None:
        return {"region": region, "service_url": None}
    if "://" in text:
        return {"region": None, "service_url": text}
    if _HOST.match(text):
        return {"region": None, "service_url": f"https://remoterendering.{text}"}
    raise _domain_error(what, value)


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith("<") and value.strip().endswith(">")


@dataclass(frozen=True)
class ArrConfigFile:
    """What an ``arrconfig.json`` says, its placeholders left out.

    ``settings`` holds what maps onto :class:`~arr_prefect.ArrSettings`; ``vm_size`` and
    ``max_lease_time`` are ``arr sessions create``'s defaults, checked only when used
    (as the script checks them only when it creates a session).
    """

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    vm_size: str | None = None
    max_lease_time: str | None = None
    unfilled: tuple[str, ...] = ()

    def default_size(self) -> SessionSize | None:
        if self.vm_size is None:
            return None
        try:
            return SessionSize.parse(self.vm_size)
        except InvalidInputError:
            raise ConfigurationError(
                f"renderingSessionSettings.vmSize {self.vm_size!r} in {self.path} is not valid:"
                " select a vmSize out of standard, premium"
            ) from None

    def default_lease(self) -> timedelta | None:
        if self.max_lease_time is None:
            return None
        try:
            return parse_duration(self.max_lease_time)
        except InvalidInputError:
            raise ConfigurationError(
                f"renderingSessionSettings.maxLeaseTime {self.max_lease_time!r} in {self.path}"
                " is not valid: provide a time in hh:mm:ss format"
            ) from None


def read_arrconfig(path: Path) -> ArrConfigFile:
    """Read a vendor-format ``arrconfig.json`` (UTF-8, with or without the BOM that
    Windows PowerShell writes). Unknown sections and keys are ignored, as the script does."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"could not parse config file {path} as JSON (line {getattr(exc, 'lineno', '?')}):"
            " often a stray comma makes the file invalid"
        ) from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"config file {path} must hold a JSON object")

    def section(name: str) -> Mapping[str, Any]:
        value = document.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigurationError(f"{name} in {path} must be a JSON object")
        return value

    account, rendering = section("accountSettings"), section("renderingSessionSettings")
    unfilled: list[str] = []

    def value(sec: Mapping[str, Any], sec_name: str, key: str) -> str | None:
        raw = sec.get(key)
        if raw is None:
            return None
        if _is_placeholder(raw):
            unfilled.append(f"{sec_name}.{key}")
            return None
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigurationError(f"{sec_name}.{key} in {path} must be a non-empty string")
        return raw.strip()

    settings: dict[str, Any] = {}
    if (account_id := value(account, "accountSettings", "arrAccountId")) is not None:
        settings["account_id"] = account_id
    if (key := value(account, "accountSettings", "arrAccountKey")) is not None:
        settings["account_key"] = key
    if (domain := value(account, "accountSettings", "arrAccountDomain")) is not None:
        settings.update(
            account_domain_fields(domain, f"accountSettings.arrAccountDomain in {path}")
        )
    if rdomain := value(rendering, "renderingSessionSettings", "remoteRenderingDomain"):
        settings.update(
            rendering_domain_fields(
                rdomain, f"renderingSessionSettings.remoteRenderingDomain in {path}"
            )
        )
    return ArrConfigFile(
        path=path,
        settings=settings,
        vm_size=value(rendering, "renderingSessionSettings", "vmSize"),
        max_lease_time=value(rendering, "renderingSessionSettings", "maxLeaseTime"),
        unfilled=tuple(unfilled),
    )


@dataclass
class ConfigSources:
    """The sources of one ``arr`` invocation (see the module docstring for the order)."""

    flags: dict[str, Any] = field(default_factory=dict)
    block: str | None = None
    config_file: Path | None = None


BlockLoader = Callable[[str], Mapping[str, Any]]
"""Turns a block name into its account's settings fields (:data:`SETTING_NAMES`)."""


def _environment_layer() -> dict[str, Any]:
    """The settings that ``ARR_*`` variables and ``.env`` set, and only those."""
    from_env = load_settings()
    return {name: getattr(from_env, name) for name in from_env.model_fields_set}


def _merge(layers: list[tuple[Mapping[str, Any], bool]]) -> dict[str, Any]:
    """Lowest layer first; an endpoint group is taken whole from the highest that sets it.

    A ``whole`` layer (a credentials block) sets every account field, unset ones to None:
    a block's account is all the block's, never half from the layers below it.
    """
    merged: dict[str, Any] = {}
    for layer, whole in layers:
        if whole:
            merged.update({name: layer.get(name) for name in SETTING_NAMES})
            continue
        for group in _GROUPS:
            if any(layer.get(name) is not None for name in group):
                for name in group:
                    merged[name] = layer.get(name)
        for name, val in layer.items():
            if val is not None and not any(name in group for group in _GROUPS):
                merged[name] = val
    return merged


def resolve_settings(
    sources: ConfigSources, load_block: BlockLoader
) -> tuple[ArrSettings, ArrConfigFile | None]:
    """The settings for this invocation, and the config file (for create's defaults).

    Raises :class:`ConfigurationError` (exit status 2) naming what is wrong or missing.
    """
    config = read_arrconfig(sources.config_file) if sources.config_file is not None else None
    layers: list[tuple[Mapping[str, Any], bool]] = [
        (config.settings if config is not None else {}, False),
        (_environment_layer(), False),
    ]
    if sources.block is not None:
        layers.append((load_block(sources.block), True))
    layers.append((sources.flags, False))
    settings = load_settings(**_merge(layers))
    if not settings.is_configured:
        missing = []
        if settings.account_id is None:
            missing.append(("accountSettings.arrAccountId", "ARR_ACCOUNT_ID or --account-id"))
        if settings.account_key is None:
            missing.append(("accountSettings.arrAccountKey", "ARR_ACCOUNT_KEY"))
        hints = []
        for field_name, elsewhere in missing:
            if config is not None and field_name in config.unfilled:
                hints.append(
                    f"{field_name} is not filled in in {config.path}; set it, or {elsewhere}"
                )
            else:
                hints.append(
                    f"set {elsewhere}" + (f" ({field_name} in {config.path})" if config else "")
                )
        raise ConfigurationError("no ARR account configured: " + "; ".join(hints))
    try:
        settings.service_base_url  # noqa: B018 - raises when no endpoint is configured
    except ConfigurationError:
        where = (
            f" (renderingSessionSettings.remoteRenderingDomain in {config.path})"
            if config is not None
            else ""
        )
        raise ConfigurationError(
            "no session API endpoint: give --region (e.g. westus2), --service-url, ARR_REGION,"
            f" ARR_SERVICE_URL or an account domain in a public region{where}"
        ) from None
    return settings, config
