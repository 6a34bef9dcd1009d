"""Azure Remote Rendering sessions: settings, models, errors, the async client, the emulator.

The core has no Prefect in it; ``tasks`` and ``flows`` build on it. The one Prefect name
here, :class:`RemoteRenderingCredentials` (a Block), is imported on first use, so that
``import arr_prefect`` (the emulator, the client) stays free of Prefect's import cost;
``dir()`` lists it, which is how ``prefect block register -m arr_prefect`` finds it.

``__version__`` is the installed distribution's version (``pip show arr-prefect``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version
from typing import TYPE_CHECKING, Any

from arr_prefect.auth import AccessToken
from arr_prefect.client import ArrClient, new_session_id, open_client, use_client_factory
from arr_prefect.clock import Clock, ScaledClock, SystemClock, VirtualClock
from arr_prefect.errors import (
    ArrError,
    ArrHTTPError,
    ArrTransportError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    CreateOutcomeUnknownError,
    InvalidInputError,
    InvalidLeaseError,
    InvalidSessionIdError,
    InvalidSizeError,
    LeaseNotExtendedError,
    QuotaExceededError,
    RateLimitedError,
    ReadyTimeoutError,
    ServiceError,
    SessionConflictError,
    SessionEndedError,
    SessionExpiredError,
    SessionFailedError,
    SessionNotFoundError,
    SessionStoppedError,
    TimeSpanFormatError,
)
from arr_prefect.models import (
    MAX_LEASE,
    ApiVersion,
    Session,
    SessionSize,
    SessionStatus,
    format_timespan,
    parse_lease,
    parse_timespan,
)
from arr_prefect.settings import ArrSettings, load_settings

if TYPE_CHECKING:
    from arr_prefect.credentials import RemoteRenderingCredentials

try:
    __version__: str = _distribution_version("arr-prefect")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "MAX_LEASE",
    "AccessToken",
    "ApiVersion",
    "ArrClient",
    "ArrError",
    "ArrHTTPError",
    "ArrSettings",
    "ArrTransportError",
    "AuthenticationError",
    "BadRequestError",
    "Clock",
    "ConfigurationError",
    "CreateOutcomeUnknownError",
    "InvalidInputError",
    "InvalidLeaseError",
    "InvalidSessionIdError",
    "InvalidSizeError",
    "LeaseNotExtendedError",
    "QuotaExceededError",
    "RateLimitedError",
    "ReadyTimeoutError",
    "RemoteRenderingCredentials",
    "ScaledClock",
    "ServiceError",
    "Session",
    "SessionConflictError",
    "SessionEndedError",
    "SessionExpiredError",
    "SessionFailedError",
    "SessionNotFoundError",
    "SessionSize",
    "SessionStatus",
    "SessionStoppedError",
    "SystemClock",
    "TimeSpanFormatError",
    "VirtualClock",
    "format_timespan",
    "load_settings",
    "new_session_id",
    "open_client",
    "parse_lease",
    "parse_timespan",
    "use_client_factory",
]

_LAZY = {"RemoteRenderingCredentials": "arr_prefect.credentials"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
