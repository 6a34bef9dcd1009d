"""What users get wrong: each mistake gets a specific, readable error and no session."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError

from arr_prefect import tasks
from arr_prefect.auth import TokenCache
from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.errors import (
    ArrTransportError,
    ConfigurationError,
    InvalidLeaseError,
    InvalidSizeError,
)
from arr_prefect.flows import render_batch, rendering_session
from arr_prefect.settings import load_settings
from tests.security.conftest import ACCOUNT_ID, ACCOUNT_KEY, make_settings

BAD_LEASES = [
    pytest.param("abc", "not a TimeSpan", id="lease-abc"),
    pytest.param("-1:00:00", "longer than zero", id="lease-negative"),
    pytest.param(0, "longer than zero", id="lease-zero"),
    pytest.param("00:00:00", "longer than zero", id="lease-zero-timespan"),
    pytest.param("1.00:00:01", "at most 24 hours", id="lease-over-24h"),
    pytest.param(timedelta(hours=25), "at most 24 hours", id="lease-25h-timedelta"),
    pytest.param(float("nan"), "finite", id="lease-nan"),
]

Create = Callable[[ArrClient, Any, Any], Awaitable[object]]


async def _via_client(arr: ArrClient, lease: Any, size: Any) -> object:
    return await arr.create_session(lease=lease, size=size)


async def _via_task(arr: ArrClient, lease: Any, size: Any) -> object:
    return await tasks.create_session.fn(lease=lease, size=size, client=arr)


async def _via_rendering_session(arr: ArrClient, lease: Any, size: Any) -> object:
    async with rendering_session(size, lease=lease, client=arr) as session:
        return session


SURFACES = [
    pytest.param(_via_client, id="client"),
    pytest.param(_via_task, id="task"),
    pytest.param(_via_rendering_session, id="rendering_session"),
]


@pytest.fixture(params=["v1", "2021-01-01"])
def arr(request: pytest.FixtureRequest, emulator: Emulator, clock: VirtualClock) -> ArrClient:
    settings = make_settings(request.param)
    return ArrClient(
        settings, transport=emulator.transport(), clock=clock, token_cache=TokenCache()
    )


@pytest.mark.parametrize("create", SURFACES)
@pytest.mark.parametrize(("lease", "message"), BAD_LEASES)
async def test_bad_lease_is_refused_before_any_request(
    arr: ArrClient, emulator: Emulator, create: Create, lease: Any, message: str
) -> None:
    """A lease that is not a positive duration of at most 24 h is refused, nothing sent."""
    with pytest.raises(InvalidLeaseError, match=message):
        await create(arr, lease, "standard")
    assert emulator.ledger()["sessions"] == []
    assert emulator.request_counts() == {}


@pytest.mark.parametrize("create", SURFACES)
@pytest.mark.parametrize("size", ["huge", "", "Standard-XL", 3])
async def test_unknown_size_is_refused_before_any_request(
    arr: ArrClient, emulator: Emulator, create: Create, size: Any
) -> None:
    """A size other than standard/premium is refused with the choices, nothing sent."""
    with pytest.raises(InvalidSizeError, match="expected one of 'standard', 'premium'"):
        await create(arr, 30, size)
    assert emulator.request_counts() == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"account_id": ""}, "ARR_ACCOUNT_ID is empty", id="account-id-empty"),
        pytest.param({"account_id": "   "}, "ARR_ACCOUNT_ID is empty", id="account-id-blank"),
        pytest.param({"account_id": "not-a-guid"}, "must be the account's GUID", id="account-id-malformed"),
        pytest.param({"account_id": "../../etc"}, "must be the account's GUID", id="account-id-path"),
        pytest.param({"account_key": ""}, "ARR_ACCOUNT_KEY is empty", id="account-key-empty"),
        pytest.param({"service_url": "http://arr.example.com"}, "must use https://", id="service-plain-http"),
        pytest.param({"sts_url": "http://sts.example.com"}, "must use https://", id="sts-plain-http"),
        pytest.param({"service_url": "ftp://arr.example.com"}, r"http\(s\) URL", id="service-not-http"),
        pytest.param({"service_url": "https://arr.example.com/?x=1"}, "query", id="service-query"),
        pytest.param({"region": "mars"}, "unknown ARR_REGION", id="unknown-region"),
        pytest.param({"api_version": "2099-01-01"}, "api_version", id="unknown-api-version"),
    ],
)  # fmt: skip
def test_bad_settings_get_specific_errors(overrides: dict[str, Any], message: str) -> None:
    """Each settings mistake names the variable and what is wrong, never the key's value."""
    values: dict[str, Any] = {
        "account_id": ACCOUNT_ID,
        "account_key": ACCOUNT_KEY,
        "service_url": "https://arr.example.com",
        **overrides,
    }
    with pytest.raises(ConfigurationError, match=message) as info:
        load_settings(_env_file=None, **values)
    assert ACCOUNT_KEY not in str(info.value)


def test_missing_account_is_named() -> None:
    """A client without an account says which variables to set."""
    settings = load_settings(_env_file=None, service_url="https://arr.example.com")
    with pytest.raises(ConfigurationError, match="set ARR_ACCOUNT_ID and ARR_ACCOUNT_KEY"):
        ArrClient(settings)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_endpoint_is_a_transport_error_naming_the_call() -> None:
    """An endpoint nobody listens on fails fast with the operation and URL, no session."""
    url = f"http://127.0.0.1:{_closed_port()}"
    settings = make_settings(
        service_url=url, sts_url=url, max_attempts=2, backoff_initial=0.01, backoff_max=0.01
    )
    async with ArrClient(settings, token_cache=TokenCache()) as arr:
        with pytest.raises(ArrTransportError, match="get access token failed: no answer") as info:
            await arr.create_session(lease=30)
    assert url in str(info.value)
    assert ACCOUNT_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        pytest.param({"lease_minutes": "abc"}, "lease_minutes", id="lease-not-a-number"),
        pytest.param({"lease_minutes": 0}, "lease_minutes", id="lease-zero"),
        pytest.param({"lease_minutes": 2000}, "lease_minutes", id="lease-over-24h"),
        pytest.param({"size": "huge"}, "size", id="size-not-a-choice"),
        pytest.param({"size": 5}, "size", id="size-not-a-string"),
        pytest.param({"job_command": "render --all"}, "job_command", id="command-not-a-list"),
        pytest.param({"job_parameters": ["frames", 3]}, "job_parameters", id="job-parameters-not-a-dict"),
        pytest.param({"ready_timeout_minutes": -5}, "ready_timeout_minutes", id="ready-timeout-negative"),
        pytest.param({"job_timeout_minutes": "soon"}, "job_timeout_minutes", id="job-timeout-not-a-number"),
    ],
)  # fmt: skip
def test_deployment_parameters_of_the_wrong_type(parameters: dict[str, Any], field: str) -> None:
    """Parameters a deployment run would carry are validated against render_batch's signature."""
    with pytest.raises(ParameterTypeError, match=field):
        render_batch.validate_parameters(parameters)


def test_deployment_parameter_schema_has_bounds_and_choices() -> None:
    """The UI form shows size as a choice and the numbers with their bounds."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(render_batch.fn).model_dump()["properties"]
    assert schema["size"]["enum"] == ["standard", "premium"]
    assert schema["lease_minutes"]["minimum"] == 1
    assert schema["lease_minutes"]["maximum"] == 1440
    assert schema["job_timeout_minutes"]["exclusiveMinimum"] == 0
    assert all(prop.get("description") for prop in schema.values())
