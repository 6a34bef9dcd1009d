"""Settings, from ``ARR_*`` environment variables or a ``.env`` file.

=========================  =====================================================
``ARR_ACCOUNT_ID``         the account's GUID
``ARR_ACCOUNT_KEY``        the account key (secret: never logged or shown)
``ARR_ACCOUNT_DOMAIN``     e.g. ``westus2.mixedreality.azure.com`` (the STS host)
``ARR_REGION``             e.g. ``westus2`` (the session API host)
``ARR_SERVICE_URL``        overrides the session API base URL (e.g. the emulator)
``ARR_STS_URL``            overrides the STS base URL (e.g. the emulator)
``ARR_API_VERSION``        ``v1`` (the seed's API, default) or ``2021-01-01``
``ARR_QUOTA_WAIT``         seconds a create refused for the account's session
                           quota (403 ``QuotaExceeded``) keeps trying (default
                           600; 0 raises at once)
``ARR_SESSION_LIMIT``      the Prefect global concurrency limit holding the
                           account's session quota (``arr-sessions-{account_id}``)
``ARR_TIME_SCALE``         emulators only: the process clock runs this many times
                           faster than real time, to match ``arr-emulator
                           --time-scale`` (default 1, real time; read from the
                           process environment by ``clock.default_clock()``)
=========================  =====================================================

plus timeouts, retry bounds, polling and prices (see the fields). Plain ``http://`` is
accepted only for loopback hosts, so a key is never sent in clear over a network.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from arr_prefect.errors import ConfigurationError
from arr_prefect.models import ApiVersion

__all__ = ["REGIONS", "ArrSettings", "is_loopback_url", "load_settings"]

REGIONS = (
    "australiaeast",
    "eastus",
    "eastus2",
    "japaneast",
    "northeurope",
    "southcentralus",
    "southeastasia",
    "uksouth",
    "westeurope",
    "westus2",
)
"""Regions that served ARR (ARR_API.md §1). There is no fallback between them."""

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is ``localhost`` or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL with a host, got {url!r}")
    if parts.scheme == "http" and not is_loopback_url(url):
        raise ValueError(
            f"{name} must use https:// (plain http:// is accepted only for loopback hosts,"
            f" such as the emulator on 127.0.0.1), got {url!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not have a query or fragment, got {url!r}")
    return url.rstrip("/")


class ArrSettings(BaseSettings):
    """Where the service is, which account to use, and how patient to be."""

    model_config = SettingsConfigDict(
        env_prefix="ARR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    account_id: str | None = Field(default=None, description="The account's GUID.")
    account_key: SecretStr | None = Field(default=None, description="The account key.")
    account_domain: str | None = Field(
        default=None, description="The account's domain, e.g. westus2.mixedreality.azure.com."
    )
    region: str | None = Field(default=None, description="The session API's region.")
    service_url: str | None = Field(default=None, description="Session API base URL override.")
    sts_url: str | None = Field(default=None, description="Token service base URL override.")
    api_version: ApiVersion = Field(default="v1", description="'v1' or '2021-01-01'.")

    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect.")
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds for one request.")
    max_attempts: int = Field(
        default=6, ge=1, le=20, description="Attempts per request on transient failures."
    )
    backoff_initial: float = Field(default=1.0, ge=0, description="First retry delay, seconds.")
    backoff_max: float = Field(default=30.0, ge=0, description="Longest retry delay, seconds.")
    retry_after_max: float = Field(
        default=120.0, ge=0, description="Longest Retry-After the client will honour, seconds."
    )
    quota_wait: float = Field(
        default=600.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Seconds a create refused for the account's session quota (403 QuotaExceeded)"
            " keeps trying before it raises QuotaExceededError (0: raise at once). A refused"
            " create made no session, so trying again is safe; it covers a lost host whose"
            " sessions the reaper has yet to stop."
        ),
    )
    poll_interval: float = Field(
        default=5.0, gt=0, description="Seconds between status polls (the docs ask 5-10 s)."
    )
    ready_timeout: float = Field(
        default=900.0, gt=0, description="Seconds to wait for Ready (start-up takes up to 5 min)."
    )
    token_refresh_margin: float = Field(
        default=300.0, ge=0, description="Refresh the token this many seconds before exp."
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Emulated seconds per real second of the process clock, to keep time with an"
            " emulator run with --time-scale (1: real time). Opt-in, for emulators only; the"
            " clock reads it from the process environment (ARR_TIME_SCALE), not from .env."
        ),
    )
    stop_on_worker_loss: bool = Field(
        default=True,
        description=(
            "Stop the job and its session when the Prefect worker that started the flow run"
            " dies: the orphaned run could no longer be cancelled, and would keep renewing"
            " its lease until the job ends. Set false to let such runs finish."
        ),
    )
    session_limit: str = Field(
        default="arr-sessions-{account_id}",
        description=(
            "Name of the Prefect global concurrency limit that holds the account's session"
            " quota ({account_id} is filled in). A flow run takes a slot before creating a"
            " session and gives it back once the session is stopped; no such limit, or an"
            " empty name, means no quota."
        ),
    )
    session_slot_lease_seconds: float = Field(
        default=60.0,
        ge=60,
        le=86400,
        allow_inf_nan=False,
        description=(
            "Lease of a session slot, renewed every quarter of it: a killed holder's slot"
            " comes back at most this plus the server's repossessor loop (15 s) later."
        ),
    )
    stop_on_process_death: bool = Field(
        default=True,
        description=(
            "In a flow run started by a Prefect worker or runner, start a small guard"
            " process that stops the run's sessions the moment the flow-run process dies,"
            " however it dies (SIGKILL, the OOM killer): no finally runs then, and Prefect's"
            " crash hook starts seconds later. Set false to rely on the hook, the lease and"
            " the reaper alone."
        ),
    )
    price_standard_per_hour: float | None = Field(
        default=None, ge=0, description="Hourly price of a Standard session, for cost estimates."
    )
    price_premium_per_hour: float | None = Field(
        default=None, ge=0, description="Hourly price of a Premium session, for cost estimates."
    )
    price_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code of the prices above (e.g. USD, EUR), shown with every cost.",
    )

    @field_validator("account_id")
    @classmethod
    def _account_id_is_guid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("ARR_ACCOUNT_ID is empty: set it to the account's GUID")
        if not _GUID.match(value.strip()):
            # The value is not echoed: a key pasted into the wrong variable must not leak.
            raise ValueError(
                "ARR_ACCOUNT_ID must be the account's GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx),"
                f" got a {len(value)}-character value that is not one"
            )
        return value.strip().lower()

    @field_validator("account_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("ARR_ACCOUNT_KEY is empty")
        return value

    @field_validator("account_domain")
    @classmethod
    def _domain_is_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _DOMAIN.match(value.strip()):
            raise ValueError(
                f"ARR_ACCOUNT_DOMAIN must be a host name like"
                f" 'westus2.mixedreality.azure.com', got {value!r}"
            )
        return value.strip().lower()

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.strip().lower() not in REGIONS:
            raise ValueError(f"unknown ARR_REGION {value!r}: expected one of {', '.join(REGIONS)}")
        return value.strip().lower()

    @field_validator("service_url")
    @classmethod
    def _service_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_base_url("ARR_SERVICE_URL", value.strip())

    @field_validator("sts_url")
    @classmethod
    def _sts_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_base_url("ARR_STS_URL", value.strip())

    @model_validator(mode="after")
    def _backoff_order(self) -> ArrSettings:
        if self.backoff_initial > self.backoff_max:
            raise ValueError("backoff_initial must not exceed backoff_max")
        return self

    @property
    def is_configured(self) -> bool:
        """True when an account id and key are set (otherwise the demo uses the emulator)."""
        return self.account_id is not None and self.account_key is not None

    @property
    def service_base_url(self) -> str:
        """The session API's base URL: the override, or the region's host."""
        if self.service_url:
            return self.service_url
        if self.region:
            return f"https://remoterendering.{self.region}.mixedreality.azure.com"
        if self.account_domain:
            region = self.account_domain.split(".", 1)[0]
            if region in REGIONS:
                return f"https://remoterendering.{region}.mixedreality.azure.com"
        raise ConfigurationError(
            "no session API endpoint: set ARR_REGION (e.g. westus2) or ARR_SERVICE_URL"
        )

    @property
    def sts_base_url(self) -> str:
        """The token service's base URL: the override, the account domain's, or the global."""
        if self.sts_url:
            return self.sts_url
        if self.account_domain:
            return f"https://sts.{self.account_domain}"
        return "https://sts.mixedreality.azure.com"

    def require_account(self) -> tuple[str, SecretStr]:
        """The account id and key, or a :class:`ConfigurationError` naming what is missing."""
        if self.account_id is None or self.account_key is None:
            missing = [
                name
                for name, value in (
                    ("ARR_ACCOUNT_ID", self.account_id),
                    ("ARR_ACCOUNT_KEY", self.account_key),
                )
                if value is None
            ]
            raise ConfigurationError(f"no ARR account configured: set {' and '.join(missing)}")
        return self.account_id, self.account_key

    def price_per_hour(self, size: str) -> float | None:
        """The configured hourly price for a size, if any."""
        return (
            self.price_premium_per_hour
            if str(size).lower() == "premium"
            else self.price_standard_per_hour
        )


class _GivenOnly(ArrSettings):
    """Settings from the values given alone: no environment, no ``.env``."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load_settings(*, environment: bool = True, **overrides: Any) -> ArrSettings:
    """Build settings, turning pydantic's validation error into a :class:`ConfigurationError`.

    The message lists each bad field with its reason, and never the key's value.

    Settings are remembered per process for what they were built from (every environment
    variable whose upper-cased name starts with ``ARR_``, the ``.env`` file's path,
    modification time and size, and the overrides): a flow run asks for them several
    times, and building them reads the environment and ``.env`` each time. A change to
    any of those is seen at the next call. Each call returns its own copy: changing a
    field of one never changes another's.

    Args:
        environment: Read the ``ARR_*`` variables and ``.env`` under the overrides (the
            default). ``False`` checks the given values alone: how a credentials block
            validates its fields with these same rules.
        **overrides: Field values (``account_id=...``, ``api_version="2021-01-01"``...),
            which win over the environment; ``_env_file=None`` ignores ``.env``.

    Returns:
        The validated settings.

    Raises:
        ConfigurationError: A field is invalid (each bad field is named with its reason).
    """
    key = _built_from(environment, overrides)
    if key is not None and (known := _built.get(key)) is not None:
        return known.model_copy()
    try:
        built = (ArrSettings if environment else _GivenOnly)(**overrides)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid ARR settings: {reasons}") from None
    if key is not None:
        with _built_lock:
            while len(_built) >= _BUILT_MAX:
                del _built[next(iter(_built))]  # the oldest first
            _built[key] = built
    return built.model_copy()


# Settings already built, by what they were built from (see load_settings): never handed
# out themselves, only copies.
_built: dict[tuple[Any, ...], ArrSettings] = {}
_built_lock = threading.Lock()
_BUILT_MAX = 64


def _built_from(environment: bool, overrides: dict[str, Any]) -> tuple[Any, ...] | None:
    """Everything settings built with these arguments are read from, as a key (None:
    an override that cannot be a key; such settings are built every time)."""
    given = tuple(sorted(overrides.items()))
    if not environment:
        read: tuple[Any, ...] = ()
    else:
        variables = tuple(
            sorted(
                (name, value)
                for name, value in os.environ.items()
                if name.upper().startswith("ARR_")
            )
        )
        env_files = overrides.get("_env_file", ArrSettings.model_config.get("env_file"))
        read = (variables, _files_state(env_files))
    key = (environment, given, read)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _files_state(env_files: Any) -> tuple[tuple[str, int, int, int], ...] | None:
    """Each ``.env`` file as pydantic-settings would find it: its absolute path (from the
    current directory), and its modification time, size and inode (-1s: no such file)."""
    if env_files is None:
        return None
    paths = [env_files] if isinstance(env_files, str | os.PathLike) else list(env_files)
    state: list[tuple[str, int, int, int]] = []
    for given in paths:
        path = os.path.abspath(Path(given).expanduser())
        try:
            stat = os.stat(path)
        except OSError:
            state.append((path, -1, -1, -1))
            continue
        state.append((path, stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(state)
