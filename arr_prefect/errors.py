"""One exception tree for everything that can go wrong talking to ARR.

::

    ArrError
    ├── InvalidInputError (also ValueError): refused before any request is sent
    │   ├── ConfigurationError        settings: account, endpoints, api version
    │   ├── TimeSpanFormatError       not a .NET TimeSpan
    │   ├── InvalidLeaseError         not a duration, zero/negative, or over 24 h
    │   ├── InvalidSizeError          not "standard" / "premium"
    │   └── InvalidSessionIdError     would not be a safe URL path segment
    ├── ArrTransportError             no HTTP answer (connect/read failure), after retries
    ├── ArrHTTPError                  the service answered with an error status
    │   ├── BadRequestError           400
    │   ├── AuthenticationError       401, 403 (wrong key, expired or foreign token)
    │   ├── QuotaExceededError        403 QuotaExceeded: the account is at its session quota
    │   ├── SessionNotFoundError      404
    │   ├── SessionConflictError      409 (2021-01-01: the ID exists with other settings)
    │   ├── LeaseNotExtendedError     422 (2021-01-01: new lease not above the current one)
    │   ├── RateLimitedError          429, after the client's bounded retries
    │   └── ServiceError              5xx, after the client's bounded retries
    ├── CreateOutcomeUnknownError     a v1 create whose answer was lost and not reconciled
    └── SessionEndedError             the session stopped being usable
        ├── SessionFailedError        it ended in Error (e.g. no capacity)
        ├── SessionExpiredError       its lease ran out
        ├── SessionStoppedError       someone stopped it
        └── ReadyTimeoutError         it was not Ready by the deadline

Every message says what failed and, for HTTP errors, the status, the service's code and
message and the ``MS-CV`` correlation header (what support asks for). No exception ever
holds a request's headers, the account key or a token: exceptions keep the method and URL
as strings, never the ``httpx.Request``, because Prefect pickles exceptions into states.
"""

from __future__ import annotations

from typing import Any

from arr_prefect.units import format_duration

__all__ = [
    "ArrError",
    "ArrHTTPError",
    "ArrTransportError",
    "AuthenticationError",
    "BadRequestError",
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
    "ServiceError",
    "SessionConflictError",
    "SessionEndedError",
    "SessionExpiredError",
    "SessionFailedError",
    "SessionNotFoundError",
    "SessionStoppedError",
    "TimeSpanFormatError",
    "error_for_status",
]


class ArrError(Exception):
    """Base of every error this package raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default exception pickling, and
        # Prefect pickles exceptions into flow and task states.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ArrError], state: dict[str, Any]) -> ArrError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("message", ""))
    exc.__dict__.update(state)
    return exc


class InvalidInputError(ArrError, ValueError):
    """Input refused before any request was sent."""


class ConfigurationError(InvalidInputError):
    """The settings cannot work (missing account, bad URL, unknown region...)."""


class TimeSpanFormatError(InvalidInputError):
    """A string is not a .NET TimeSpan."""


class InvalidLeaseError(InvalidInputError):
    """A lease is not a positive duration of at most 24 hours."""


class InvalidSizeError(InvalidInputError):
    """A session size is not one of the service's sizes."""


class InvalidSessionIdError(InvalidInputError):
    """A session ID would not be a safe single URL path segment."""


class ArrTransportError(ArrError):
    """The service could not be reached, or the connection broke, after retries."""

    def __init__(self, message: str, *, operation: str, method: str, url: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.method = method
        self.url = url


class ArrHTTPError(ArrError):
    """The service answered with an error status."""

    def __init__(
        self,
        *,
        operation: str,
        method: str,
        url: str,
        status_code: int,
        code: str | None = None,
        service_message: str | None = None,
        ms_cv: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.operation = operation
        self.method = method
        self.url = url
        self.status_code = status_code
        self.code = code
        self.service_message = service_message
        self.ms_cv = ms_cv
        self.retry_after = retry_after
        parts = [f"{operation} failed: HTTP {status_code}"]
        if code:
            parts.append(f" {code}")
        if service_message:
            parts.append(f": {service_message}")
        parts.append(f" ({method} {url}; MS-CV: {ms_cv or 'none'})")
        super().__init__("".join(parts))


class BadRequestError(ArrHTTPError):
    """400: the service refused the request's content."""


class AuthenticationError(ArrHTTPError):
    """401 or 403: wrong account key, expired token, or a token of another account."""


class QuotaExceededError(ArrHTTPError):
    """403 ``QuotaExceeded``: the account is at its session quota; the create made nothing.

    Not an :class:`AuthenticationError`: the key is fine. The client waits for the quota
    before raising it from a create (up to ``ARR_QUOTA_WAIT``); ``waited`` is how long it
    waited, in seconds of the client's clock (None: it did not wait). The message ends with
    what to do next.
    """

    def __init__(self, *, waited: float | None = None, **fields: Any) -> None:
        super().__init__(**fields)
        self.waited = waited
        waits = (
            f" after waiting {format_duration(waited)} for a session to end (ARR_QUOTA_WAIT)"
            if waited
            else ""
        )
        self.message += (
            f". The account is at its session quota{waits}: wait for sessions to end, stop"
            " idle ones (`arr sessions list`, then `arr sessions stop <id>`), or raise the"
            " account's quota"
        )
        self.args = (self.message,)

    def after_waiting(self, waited: float) -> QuotaExceededError:
        """This refusal, saying that the client waited ``waited`` seconds for the quota."""
        return QuotaExceededError(
            waited=waited,
            operation=self.operation,
            method=self.method,
            url=self.url,
            status_code=self.status_code,
            code=self.code,
            service_message=self.service_message,
            ms_cv=self.ms_cv,
            retry_after=self.retry_after,
        )


_QUOTA_EXCEEDED = "QuotaExceeded"
"""The service's error code of a create refused for the account's session quota."""


class SessionNotFoundError(ArrHTTPError):
    """404: no such session on this account."""


class SessionConflictError(ArrHTTPError):
    """409: a session with this ID exists with other settings (2021-01-01)."""


class LeaseNotExtendedError(ArrHTTPError):
    """422: the new lease is not greater than the current one (2021-01-01)."""


class RateLimitedError(ArrHTTPError):
    """429 that outlasted the client's retries."""


class ServiceError(ArrHTTPError):
    """5xx that outlasted the client's retries."""


_BY_STATUS: dict[int, type[ArrHTTPError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: SessionNotFoundError,
    409: SessionConflictError,
    422: LeaseNotExtendedError,
    429: RateLimitedError,
}


def error_for_status(status_code: int, code: str | None = None) -> type[ArrHTTPError]:
    """The exception class for an HTTP error status and the service's error code, if any.

    A 403 is an :class:`AuthenticationError` unless its code is ``QuotaExceeded``.
    """
    if status_code == 403 and code == _QUOTA_EXCEEDED:
        return QuotaExceededError
    if status_code >= 500:
        return ServiceError
    return _BY_STATUS.get(status_code, ArrHTTPError)


class CreateOutcomeUnknownError(ArrError):
    """A v1 create's response was lost and the session it may have made was not found.

    v1 create is not idempotent, so the client does not re-post blindly; when it cannot
    tell whether a session was made, it raises this rather than risk a second one.
    ``lease_fingerprint`` is the exact ``maxLeaseTime`` the lost request carried: the
    session it may have made is the one with that lease.
    """

    lease_fingerprint: str | None = None


class SessionEndedError(ArrError):
    """The session can no longer become (or stay) Ready.

    ``session`` is the last :class:`~arr_prefect.models.Session` seen, when there was one.
    It is typed ``Any`` on purpose: :mod:`arr_prefect.models` imports this module for its
    validation errors, and naming its ``Session`` here, even for type checkers only, would
    make the two modules import each other.
    """

    def __init__(self, message: str, *, session_id: str, session: Any = None) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.session = session


class SessionFailedError(SessionEndedError):
    """The session ended in Error; ``message`` carries the service's explanation."""


class SessionExpiredError(SessionEndedError):
    """The session's lease ran out."""


class SessionStoppedError(SessionEndedError):
    """The session was stopped (by someone else) before it was ready or done."""


class ReadyTimeoutError(SessionEndedError):
    """The session did not become Ready before the deadline."""
