"""Session ids and the account id cannot change a request's path: refused before sending."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest

from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.errors import ConfigurationError, InvalidSessionIdError
from tests.security.conftest import make_client, make_settings

HOSTILE_IDS = [
    pytest.param("../x", id="dot-dot-slash"),
    pytest.param("a/b", id="slash"),
    pytest.param("a?x=1", id="query"),
    pytest.param("a#b", id="fragment"),
    pytest.param("%2e%2e", id="percent-encoded-dots"),
    pytest.param("a%2Fb", id="percent-encoded-slash"),
    pytest.param("a b", id="space"),
    pytest.param("\n", id="newline"),
    pytest.param("abc\n", id="trailing-newline"),
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("", id="empty"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a:stop", id="colon"),
    pytest.param("x" * 257, id="very-long"),
    pytest.param("sessi\u00f6n", id="non-ascii"),
]

Call = Callable[[ArrClient, str], Awaitable[object]]
CALLS = [
    pytest.param(lambda arr, sid: arr.get_session(sid), id="get_session"),
    pytest.param(lambda arr, sid: arr.stop_session(sid), id="stop_session"),
    pytest.param(lambda arr, sid: arr.extend_session(sid, timedelta(hours=1)), id="extend_session"),
    pytest.param(
        lambda arr, sid: arr.extend_session_by(sid, timedelta(minutes=5)), id="extend_session_by"
    ),
    pytest.param(lambda arr, sid: arr.wait_until_ready(sid, timeout=60), id="wait_until_ready"),
]


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def transport(sent: list[httpx.Request]) -> httpx.MockTransport:
    """Answers nothing useful: any request reaching it is a failure of the test."""

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("api_version", ["v1", "2021-01-01"])
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("session_id", HOSTILE_IDS)
async def test_hostile_session_id_is_refused_before_any_request(
    transport: httpx.MockTransport,
    sent: list[httpx.Request],
    api_version: str,
    call: Call,
    session_id: str,
) -> None:
    """Every method taking a session id refuses a hostile one and sends nothing at all."""
    async with make_client(api_version, transport, VirtualClock(autojump=True)) as arr:
        with pytest.raises(InvalidSessionIdError, match="invalid session id"):
            await call(arr, session_id)
    assert sent == []


@pytest.mark.parametrize("session_id", HOSTILE_IDS)
async def test_hostile_id_for_2021_create_is_refused(
    transport: httpx.MockTransport, sent: list[httpx.Request], session_id: str
) -> None:
    """A 2021-01-01 create with a client-chosen hostile id sends no request."""
    async with make_client("2021-01-01", transport, VirtualClock(autojump=True)) as arr:
        with pytest.raises(InvalidSessionIdError):
            await arr.create_session(lease=timedelta(minutes=10), session_id=session_id)
    assert sent == []


async def test_hostile_id_sends_nothing_to_the_emulator(emulator, recording, clock) -> None:
    """Against the emulator, too: its request counts stay empty."""
    async with make_client("v1", recording, clock) as arr:
        with pytest.raises(InvalidSessionIdError):
            await arr.stop_session("../../token")
    assert emulator.request_counts() == {}


@pytest.mark.parametrize(
    "account_id",
    [
        pytest.param("../accounts/other", id="path-traversal"),
        pytest.param("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d/../x", id="guid-then-traversal"),
        pytest.param("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d?x=1", id="guid-then-query"),
        pytest.param("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\nx", id="guid-newline-more"),
        pytest.param("not-a-guid", id="not-a-guid"),
        pytest.param("", id="empty"),
    ],
)
def test_account_id_must_be_a_guid(account_id: str) -> None:
    """The account id goes into every path, so settings accept only a GUID."""
    with pytest.raises(ConfigurationError, match=r"account_id: .*GUID"):
        make_settings(account_id=account_id)


def test_account_id_whitespace_is_stripped_not_sent() -> None:
    """A GUID with surrounding whitespace (a pasted value) is normalised before any path."""
    settings = make_settings(account_id=" 0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D\n")
    assert settings.account_id == "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
