"""Azure Remote Rendering sessions: settings, models, errors, the async client, the emulator.

This package has no Prefect in it; ``tasks`` and ``flows`` build on it.
"""

from __future__ import annotations

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
    "RateLimitedError",
    "ReadyTimeoutError",
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
