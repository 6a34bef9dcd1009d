"""Access tokens from the Mixed Reality STS, cached until shortly before they expire.

API facts (ARR_API.md §2):

- ``GET {sts}/accounts/{accountId}/token`` with ``Authorization: Bearer {accountId}:{key}``
  answers ``{"AccessToken": "<JWT>"}``: PascalCase, and no expiry field. The expiry is the
  JWT's ``exp`` claim; tokens live 24 h.
- Session calls send ``Authorization: Bearer <AccessToken>``. A token must be fetched anew
  before ``exp``, and once more after a 401 from the session API (:class:`ArrAuth`).

Tokens are :class:`~pydantic.SecretStr` from the moment they arrive; the raw string is
unwrapped only where a request header is built.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from arr_prefect.clock import Clock

__all__ = [
    "PROCESS_TOKEN_CACHE",
    "AccessToken",
    "ArrAuth",
    "TokenCache",
    "TokenSource",
    "jwt_expiry",
]

# When a token carries no readable ``exp`` we still cache it, but only briefly.
_UNKNOWN_EXPIRY_SECONDS = 600.0


class AccessToken(BaseModel):
    """An STS access token. ``repr`` and ``str`` never show the token itself."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr
    expires_at: datetime | None
    account_id: str

    def expires_in(self, now: float) -> float | None:
        """Seconds left at ``now`` (epoch seconds), or None when the expiry is unknown."""
        return None if self.expires_at is None else self.expires_at.timestamp() - now


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT, read without verifying it (the service verifies)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
        exp = claims["exp"]
        return datetime.fromtimestamp(float(exp), tz=UTC)
    except (ValueError, KeyError, TypeError, OverflowError):
        return None


@dataclass
class TokenCache:
    """Tokens shared by every client in a process, one per (STS, account, key).

    Each Prefect task opens its own client; sharing the cache means a flow fetches one
    token per account, not one per task. The key is keyed by a hash, never stored.
    """

    _tokens: dict[tuple[str, str, str], AccessToken] = field(default_factory=dict)
    # The fetch in flight per key: asyncio futures belong to one event loop, and Prefect
    # may run tasks in several.
    _fetches: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, dict[tuple[str, str, str], asyncio.Task[AccessToken]]
    ] = field(default_factory=weakref.WeakKeyDictionary)

    @staticmethod
    def key(sts_url: str, account_id: str, account_key: SecretStr) -> tuple[str, str, str]:
        digest = hashlib.sha256(account_key.get_secret_value().encode()).hexdigest()
        return (sts_url, account_id, digest)

    async def fetch_once(
        self, key: tuple[str, str, str], fetch: Callable[[], Awaitable[AccessToken]]
    ) -> AccessToken:
        """Fetch a token for ``key`` and cache it; callers arriving meanwhile share the fetch.

        Every waiter is woken by the one fetch's result at once (a lock would hand it on one
        waiter at a time). The fetch runs as its own task, so a waiter that is cancelled
        does not cancel it for the others.
        """
        loop = asyncio.get_running_loop()
        fetches = self._fetches.setdefault(loop, {})
        running = fetches.get(key)
        if running is None:

            async def fetch_and_cache() -> AccessToken:
                token = await fetch()
                self.put(key, token)
                return token

            running = fetches[key] = loop.create_task(fetch_and_cache(), name="arr-token-fetch")

            def done(task: asyncio.Task[AccessToken]) -> None:
                if fetches.get(key) is task:
                    del fetches[key]
                if not task.cancelled():
                    task.exception()  # retrieved: the waiters have it

            running.add_done_callback(done)
        return await asyncio.shield(running)

    def get(self, key: tuple[str, str, str]) -> AccessToken | None:
        return self._tokens.get(key)

    def put(self, key: tuple[str, str, str], token: AccessToken) -> None:
        self._tokens[key] = token

    def discard(self, key: tuple[str, str, str], token: AccessToken | None = None) -> None:
        """Forget the cached token (only if it is still ``token``, when given)."""
        if token is None or self._tokens.get(key) is token:
            self._tokens.pop(key, None)

    def clear(self) -> None:
        self._tokens.clear()
        self._fetches.clear()


PROCESS_TOKEN_CACHE = TokenCache()


class TokenSource:
    """Hands out a valid token from the cache, fetching one when needed."""

    def __init__(
        self,
        *,
        cache: TokenCache,
        key: tuple[str, str, str],
        fetch: Callable[[], Awaitable[AccessToken]],
        clock: Clock,
        refresh_margin: float,
    ) -> None:
        self._cache = cache
        self._key = key
        self._fetch = fetch
        self._clock = clock
        self._margin = refresh_margin

    def _fresh(self, token: AccessToken | None) -> bool:
        if token is None:
            return False
        left = token.expires_in(self._clock.time())
        return left is None or left > self._margin

    async def get(self, *, stale: AccessToken | None = None) -> AccessToken:
        """A token that is not within the refresh margin of its expiry.

        ``stale`` is a token the service just refused: it is dropped from the cache even if
        it looks valid, so the next fetch goes to the STS.
        """
        if stale is not None:
            self._cache.discard(self._key, stale)
        token = self._cache.get(self._key)
        if self._fresh(token):
            assert token is not None
            return token
        return await self._cache.fetch_once(self._key, self._fetch)


class ArrAuth(httpx.Auth):
    """Adds the access token to each session call; on a 401 refreshes once and resends."""

    requires_request_body = True

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("ArrAuth works only with httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._source.get()
        request.headers["Authorization"] = f"Bearer {token.token.get_secret_value()}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            token = await self._source.get(stale=token)
            request.headers["Authorization"] = f"Bearer {token.token.get_secret_value()}"
            yield request
