"""Azure Remote Rendering sessions: settings, models, errors, the async client, the emulator.

This package has no Prefect in it; ``tasks`` and ``flows`` build on it.
"""

from __future__ import annotations

from remote_rendering.auth import AccessToken
from remote_rendering.client import ArrClient, new_session_id, open_client, use_client_factory
from remote_rendering.clock import Clock, ScaledClock, SystemClock, VirtualClock
from remote_rendering.errors import (
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
from remote_rendering.models import (
    MAX_LEASE,
    ApiVersion,
    Session,
    SessionSize,
    SessionStatus,
    format_timespan,
    parse_lease,
    parse_timespan,
)
from remote_rendering.settings import ArrSettings, load_settings

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
