"""Prefect tasks for each step of the ARR session API: thin wrappers over the client.

Every task comes in two forms over one ``async def`` (:mod:`arr_prefect.tasks._dual`):
the plain name (``create_session``) returns the value when called from sync code (a
``def`` flow or task, a script) and the awaitable when called from async code; the
``a``-prefixed name (``acreate_session``, ``await_until_ready`` for ``wait_until_ready``)
is the explicit async form, which refuses sync callers with a ``TypeError``. Both forms
are the same Prefect task (the same task-run names in the UI). Every task:

- opens a client for its account, highest first: the ``client=`` passed,
  the ``credentials=`` passed (a :class:`~arr_prefect.credentials.RemoteRenderingCredentials`
  block), or the ``ARR_*`` settings; so it drops into any flow;
- uses ``cache_policy=NO_CACHE`` and ``persist_result=False``: Prefect 3 caches a task's
  result by its inputs within a run, so a status check called twice would otherwise
  return the first answer, and a token must never land in result storage;
- leaves retrying to the client (connection errors, 5xx, 429 with ``Retry-After``). Only
  idempotent calls (get, list, extend to a total, stop) add a Prefect retry, and only for
  transient failures that outlasted the client's own retries; create never does, because
  a v1 create is not idempotent.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from arr_prefect.auth import AccessToken
from arr_prefect.client import ArrClient
from arr_prefect.credentials import RemoteRenderingCredentials, open_client_for
from arr_prefect.errors import ArrTransportError, RateLimitedError, ServiceError
from arr_prefect.models import Session, SessionSize, SessionStatus
from arr_prefect.tasks._dual import dual_task
from arr_prefect.units import format_duration, format_lease

__all__ = [
    "acreate_session",
    "aextend_session",
    "aget_access_token",
    "aget_session",
    "alist_sessions",
    "astop_session",
    "await_until_ready",
    "create_session",
    "extend_session",
    "get_access_token",
    "get_session",
    "list_sessions",
    "stop_session",
    "wait_until_ready",
]


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a run, a plain logger outside (``task.fn()`` in tests)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("arr.tasks")


async def _transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a task only for failures that may pass (the service down, throttling)."""
    try:
        await state.aresult()
    except (ArrTransportError, ServiceError, RateLimitedError):
        return True
    except BaseException:  # noqa: BLE001 - anything else is not worth a retry
        return False
    return False


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def _create_session_run_name() -> str:
    """``create-session-standard`` or ``-premium``, however the caller spelled the size."""
    from prefect.runtime import task_run

    try:
        size = SessionSize.parse(task_run.parameters.get("size", SessionSize.STANDARD))
    except ValueError:  # a bad size fails the task itself, with its own message
        return "create-session"
    return f"create-session-{size.value.lower()}"


_COMMON: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
_IDEMPOTENT: dict[str, Any] = {
    **_COMMON,
    "retries": 2,
    "retry_delay_seconds": [10, 60],
    "retry_condition_fn": _transient,
}


@dual_task(name="get-access-token", **_COMMON)
async def get_access_token(
    client: ArrClient | None = None, credentials: RemoteRenderingCredentials | None = None
) -> AccessToken:
    """Get an STS access token for the configured account (cached until shortly before exp).

    The token is a ``SecretStr``: it never shows in logs, the UI or result storage.

    Args:
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        The token (a ``SecretStr`` value, with its account and expiry).

    Raises:
        AuthenticationError: The account key was refused (401).
        ConfigurationError: No account is configured.
        ArrTransportError: The STS could not be reached after the client's retries.

    Example::

        @flow
        async def check_credentials():
            token = await get_access_token()
            print(token.expires_at)
    """
    async with open_client_for(credentials, client) as arr:
        token = await arr.get_access_token()
    run_logger().info(
        "Access token for account %s valid until %s", token.account_id, token.expires_at
    )
    return token


@dual_task(name="create-session", task_run_name=_create_session_run_name, **_COMMON)
async def create_session(
    lease: timedelta | str | int | float = timedelta(minutes=30),
    size: SessionSize | str = SessionSize.STANDARD,
    models: list[str] | None = None,
    session_id: str | None = None,
    client: ArrClient | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> Session:
    """Create a session (status Starting) and return it; the caller must stop it.

    ``lease`` is the total lease (``timedelta``, TimeSpan string like ``"1:00:00"`` or
    minutes). Bad input raises before any request. Not retried by Prefect: v1 create is not
    idempotent (the client reconciles a lost answer instead).

    Args:
        lease: The total lease: a ``timedelta``, a TimeSpan string (``"1:00:00"``) or
            minutes. At most 24 h.
        size: ``"standard"`` or ``"premium"``.
        models: URLs of asset containers to preload.
        session_id: The ID to create (2021-01-01 only, where the client names sessions);
            None: a fresh one.
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        The new session, status Starting.

    Raises:
        InvalidLeaseError: The lease is not positive or over 24 h (before any request).
        InvalidSizeError: The size is neither standard nor premium (before any request).
        CreateOutcomeUnknownError: A v1 create whose answer was lost and could not be
            reconciled; look for the session with ``list_sessions``.
        ArrHTTPError: Any other refusal of the service (e.g. 403 QuotaExceeded).

    Example::

        @flow
        async def render():
            session = await create_session(lease=timedelta(minutes=20), size="standard")
            try:
                session = await wait_until_ready(session.id)
                ...
            finally:
                await stop_session(session.id)
    """
    async with open_client_for(credentials, client) as arr:
        session = await arr.create_session(
            lease=lease, size=size, models=models or (), session_id=session_id
        )
    run_logger().info(
        "Created session %s (%s, lease %s)",
        session.id,
        session.size,
        format_lease(_seconds(session.max_lease)),
    )
    return session


@dual_task(name="wait-until-ready", task_run_name="wait-until-ready-{session_id}", **_COMMON)
async def wait_until_ready(
    session_id: str,
    timeout: float | None = None,
    poll_interval: float | None = None,
    client: ArrClient | None = None,
    credentials: RemoteRenderingCredentials | None = None,
    created_at: float | None = None,
) -> Session:
    """Poll until the session is Ready and return it, logging each status change.

    Times in the log count from ``created_at`` (the create request, epoch seconds on the
    client's clock) when given, so they match the run's summary; else from the call.

    Ends with ``SessionFailedError`` (Error, with the service's message),
    ``SessionExpiredError``, ``SessionStoppedError`` or ``ReadyTimeoutError`` after
    ``timeout`` seconds (default ``ARR_READY_TIMEOUT``). Polls every ``poll_interval``
    seconds (default ``ARR_POLL_INTERVAL``, 5 s as the service asks) and honours 429.

    Args:
        session_id: The session to wait for.
        timeout: Seconds to wait (default ``ARR_READY_TIMEOUT``).
        poll_interval: Seconds between polls (default ``ARR_POLL_INTERVAL``).
        created_at: When the create was sent (the client's clock), for the log's times.
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        The session, Ready, with its hostname and ports.

    Raises:
        SessionFailedError: The session ended in Error (with the service's message).
        SessionExpiredError: Its lease ran out first.
        SessionStoppedError: It was stopped elsewhere.
        ReadyTimeoutError: Not Ready within ``timeout``.

    Example::

        @flow
        async def render(session_id: str):
            session = await wait_until_ready(session_id, timeout=600)
            print(session.hostname, session.handshake_port)
    """
    logger = run_logger()
    async with open_client_for(credentials, client) as arr:
        started = created_at if created_at is not None else arr.clock.time()
        since = "the create request" if created_at is not None else "the wait began"

        def on_status(previous: SessionStatus | None, session: Session) -> None:
            waited = format_duration(arr.clock.time() - started)
            if previous is None:
                logger.info(
                    "Session %s is %s (%s after %s)", session.id, session.status, waited, since
                )
            else:
                logger.info(
                    "Session %s: %s -> %s, %s after %s",
                    session.id,
                    previous,
                    session.status,
                    waited,
                    since,
                )

        session = await arr.wait_until_ready(
            session_id, timeout=timeout, poll_interval=poll_interval, on_status=on_status
        )
        logger.info(
            "Session %s is Ready %s after %s, at %s (handshake port %s)",
            session.id,
            format_duration(arr.clock.time() - started),
            since,
            session.hostname,
            session.handshake_port,
        )
    return session


@dual_task(name="extend-session", task_run_name="extend-session-{session_id}", **_IDEMPOTENT)
async def extend_session(
    session_id: str,
    lease: timedelta | str | int | float | None = None,
    extend_by: timedelta | str | int | float | None = None,
    client: ArrClient | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> Session:
    """Extend a session's lease; give exactly one of ``lease`` or ``extend_by``.

    ``lease`` is the new **total** (the API's own semantics: counted from Ready, not an
    increment). ``extend_by`` makes the lease end that long from now, accounting for the
    time already elapsed (it sends ``elapsed + extend_by``, or nothing if already enough).

    Args:
        session_id: The session to extend.
        lease: The new total lease (counted from the session's start).
        extend_by: How long from now the lease should end.
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        The session with its new lease.

    Raises:
        ValueError: Neither or both of ``lease`` and ``extend_by`` given.
        LeaseNotExtendedError: The service refused a lease not greater than the current one.
        SessionNotFoundError: No such session.

    Example::

        @flow
        async def keep_alive(session_id: str):
            await extend_session(session_id, extend_by=timedelta(minutes=30))
    """
    if (lease is None) == (extend_by is None):
        raise ValueError("give exactly one of lease (the new total) or extend_by")
    async with open_client_for(credentials, client) as arr:
        if lease is not None:
            session = await arr.extend_session(session_id, lease)
        else:
            assert extend_by is not None
            session = await arr.extend_session_by(session_id, extend_by)
    run_logger().info(
        "Session %s lease is now %s (elapsed %s)",
        session.id,
        format_lease(_seconds(session.max_lease)),
        format_duration(_seconds(session.elapsed)),
    )
    return session


@dual_task(name="stop-session", task_run_name="stop-session-{session_id}", **_IDEMPOTENT)
async def stop_session(
    session_id: str,
    client: ArrClient | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> bool:
    """Stop a session. Idempotent: stopping a session already over (Stopped, Expired,
    Error) or unknown is success. True when the service accepted the stop, False when it
    answered that the session is unknown or already over.

    Args:
        session_id: The session to stop.
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        True when the service accepted the stop; False when the session was unknown or
        already over.

    Raises:
        ArrHTTPError: The service refused the stop for another reason (after retries).

    Example::

        @flow
        async def cleanup(session_id: str):
            await stop_session(session_id)
    """
    async with open_client_for(credentials, client) as arr:
        stopped = await arr.stop_session(session_id)
    if stopped:
        run_logger().info("Stopped session %s", session_id)
    else:
        run_logger().info("Session %s was already over or unknown", session_id)
    return stopped


@dual_task(name="get-session", task_run_name="get-session-{session_id}", **_IDEMPOTENT)
async def get_session(
    session_id: str,
    client: ArrClient | None = None,
    credentials: RemoteRenderingCredentials | None = None,
) -> Session:
    """The session's current properties (never cached: each call asks the service).

    Args:
        session_id: The session to read.
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        The session as the service reports it now.

    Raises:
        SessionNotFoundError: No such session.

    Example::

        @flow
        async def status(session_id: str):
            session = await get_session(session_id)
            print(session.status, session.remaining)
    """
    async with open_client_for(credentials, client) as arr:
        return await arr.get_session(session_id)


@dual_task(name="list-sessions", **_IDEMPOTENT)
async def list_sessions(
    client: ArrClient | None = None, credentials: RemoteRenderingCredentials | None = None
) -> list[Session]:
    """Every active (Starting or Ready) session of the account, all pages.

    Args:
        client: A client to use (its account and connection pool); else ``credentials``.
        credentials: A credentials block for the account; else the ``ARR_*`` settings.

    Returns:
        The account's active sessions, every page read.

    Raises:
        ArrHTTPError: The service refused the list (after retries).

    Example::

        @flow
        async def report():
            for session in await list_sessions():
                print(session.id, session.status, session.elapsed)
    """
    async with open_client_for(credentials, client) as arr:
        return await arr.list_sessions()


# The explicit async forms (see tasks/_dual.py): ``await`` them in async code.
aget_access_token = get_access_token.async_form()
"""The async form of :func:`get_access_token`: ``await aget_access_token(...)``."""
acreate_session = create_session.async_form()
"""The async form of :func:`create_session`: ``await acreate_session(...)``."""
await_until_ready = wait_until_ready.async_form()
"""The async form of :func:`wait_until_ready` (``a`` + ``wait_until_ready``)."""
aextend_session = extend_session.async_form()
"""The async form of :func:`extend_session`: ``await aextend_session(...)``."""
astop_session = stop_session.async_form()
"""The async form of :func:`stop_session`: ``await astop_session(...)``."""
aget_session = get_session.async_form()
"""The async form of :func:`get_session`: ``await aget_session(...)``."""
alist_sessions = list_sessions.async_form()
"""The async form of :func:`list_sessions`: ``await alist_sessions(...)``."""
