"""Errors: one tree, readable messages, and they survive pickling (Prefect states)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from arr_prefect import errors
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
    error_for_status,
)
from arr_prefect.models import Session, SessionStatus

HTTP_KWARGS: dict[str, Any] = {
    "operation": "get session",
    "method": "GET",
    "url": "https://arr.test/v1/accounts/a/sessions/s/properties",
    "status_code": 404,
    "code": "NotFound",
    "service_message": "no such session",
    "ms_cv": "CMXegpZRMECH4pbOW2j5GA.0",
    "retry_after": 7.0,
}

SESSION = Session(id="s1", status=SessionStatus.ERROR, message="no capacity")


def _roundtrip(error: ArrError) -> Any:
    # Prefect pickles exceptions into states; the bytes are our own, made just above.
    return pickle.loads(pickle.dumps(error))  # noqa: S301


def _all_error_classes() -> list[type[ArrError]]:
    found: list[type[ArrError]] = []
    pending: list[type[ArrError]] = [ArrError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    # Only the tree of arr_prefect.errors: other layers (flows) subclass it too.
    mine = [c for c in set(found) if c.__module__ == errors.__name__]
    return sorted(mine, key=lambda c: c.__name__)


def _instance(cls: type[ArrError]) -> ArrError:
    if issubclass(cls, ArrHTTPError):
        return cls(**HTTP_KWARGS)
    if issubclass(cls, ArrTransportError):
        return cls(
            "list sessions failed: no answer",
            operation="list sessions",
            method="GET",
            url="https://arr.test/v1/accounts/a/sessions",
        )
    if issubclass(cls, SessionEndedError):
        return cls("session s1 ended in Error: no capacity", session_id="s1", session=SESSION)
    return cls(f"{cls.__name__} happened")


def test_every_error_is_exported() -> None:
    """Every ArrError subclass in the module is in errors.__all__."""
    names = {cls.__name__ for cls in _all_error_classes()}
    assert names <= set(errors.__all__)


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.__name__) for c in _all_error_classes()])
def test_pickles_with_message_and_attributes(cls: type[ArrError]) -> None:
    """Each error round-trips through pickle with its type, message, args and attributes."""
    original = _instance(cls)
    copy = _roundtrip(original)
    assert type(copy) is cls
    assert str(copy) == str(original)
    assert copy.message == original.message
    assert copy.args == original.args
    assert vars(copy) == vars(original)


def test_http_error_message_has_everything_support_needs() -> None:
    """The message names the operation, status, code, service message, request and MS-CV."""
    text = str(SessionNotFoundError(**HTTP_KWARGS))
    assert text == (
        "get session failed: HTTP 404 NotFound: no such session"
        " (GET https://arr.test/v1/accounts/a/sessions/s/properties;"
        " MS-CV: CMXegpZRMECH4pbOW2j5GA.0)"
    )


def test_http_error_message_without_details() -> None:
    """With no code, message or MS-CV the message still says so plainly."""
    error = ServiceError(operation="stop session", method="DELETE", url="u", status_code=503)
    assert str(error) == "stop session failed: HTTP 503 (DELETE u; MS-CV: none)"


def test_session_ended_error_keeps_session() -> None:
    """A SessionEndedError carries the session ID and the last session seen."""
    error = SessionFailedError("failed", session_id="s1", session=SESSION)
    copy = _roundtrip(error)
    assert copy.session == SESSION
    assert copy.session_id == "s1"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        pytest.param(400, BadRequestError, id="400"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, AuthenticationError, id="403"),
        pytest.param(404, SessionNotFoundError, id="404"),
        pytest.param(409, SessionConflictError, id="409"),
        pytest.param(422, LeaseNotExtendedError, id="422"),
        pytest.param(429, RateLimitedError, id="429"),
        pytest.param(500, ServiceError, id="500"),
        pytest.param(503, ServiceError, id="503"),
        pytest.param(418, ArrHTTPError, id="418-generic"),
    ],
)
def test_error_for_status(status: int, cls: type[ArrHTTPError]) -> None:
    """Each status maps to its specific class."""
    assert error_for_status(status) is cls


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        pytest.param(403, "QuotaExceeded", QuotaExceededError, id="403-quota"),
        pytest.param(403, "Forbidden", AuthenticationError, id="403-forbidden"),
        pytest.param(403, None, AuthenticationError, id="403-no-code"),
        pytest.param(403, "quotaexceeded", AuthenticationError, id="403-other-spelling"),
        pytest.param(401, "QuotaExceeded", AuthenticationError, id="401-quota-code"),
        pytest.param(429, "QuotaExceeded", RateLimitedError, id="429-quota-code"),
    ],
)
def test_error_for_status_and_code(status: int, code: str | None, cls: type[ArrHTTPError]) -> None:
    """Only a 403 whose service code is QuotaExceeded is a QuotaExceededError."""
    assert error_for_status(status, code) is cls


def test_quota_exceeded_is_not_an_authentication_error() -> None:
    """The account's key is fine when its quota is full: no "check your key" class."""
    assert issubclass(QuotaExceededError, ArrHTTPError)
    assert not issubclass(QuotaExceededError, AuthenticationError)


@pytest.mark.parametrize(
    ("waited", "says"),
    [
        pytest.param(None, "The account is at its session quota: wait", id="no-wait"),
        pytest.param(
            600.0,
            "The account is at its session quota after waiting 10 min for a session to end"
            " (ARR_QUOTA_WAIT): wait",
            id="waited-10-min",
        ),
    ],
)
def test_quota_exceeded_says_what_to_do(waited: float | None, says: str) -> None:
    """The message keeps the service's answer and adds the wait and the next steps."""
    kwargs = {**HTTP_KWARGS, "status_code": 403, "code": "QuotaExceeded"}
    error = QuotaExceededError(waited=waited, **kwargs)
    text = str(error)
    assert text.startswith("get session failed: HTTP 403 QuotaExceeded: no such session (GET")
    assert says in text
    assert "stop idle ones (`arr sessions list`, then `arr sessions stop <id>`)" in text
    assert text.endswith("or raise the account's quota")
    assert error.args == (text,)
    copy = _roundtrip(error)
    assert (str(copy), copy.waited, copy.ms_cv) == (text, waited, error.ms_cv)
    assert str(error.after_waiting(600.0)) == str(QuotaExceededError(waited=600.0, **kwargs))


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        pytest.param(ConfigurationError, InvalidInputError, id="configuration"),
        pytest.param(TimeSpanFormatError, InvalidInputError, id="timespan"),
        pytest.param(InvalidLeaseError, InvalidInputError, id="lease"),
        pytest.param(InvalidSizeError, InvalidInputError, id="size"),
        pytest.param(InvalidSessionIdError, InvalidInputError, id="session-id"),
        pytest.param(InvalidInputError, ValueError, id="input-is-value-error"),
        pytest.param(CreateOutcomeUnknownError, ArrError, id="create-unknown"),
        pytest.param(SessionExpiredError, SessionEndedError, id="expired"),
        pytest.param(SessionStoppedError, SessionEndedError, id="stopped"),
        pytest.param(ReadyTimeoutError, SessionEndedError, id="timeout"),
    ],
)
def test_tree(cls: type[Exception], base: type[Exception]) -> None:
    """The hierarchy is the one documented in the module docstring."""
    assert issubclass(cls, base)
    assert issubclass(cls, ArrError)
