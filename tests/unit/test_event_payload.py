"""The session events' common payload: null for what is unknown, cost only with a price."""

from __future__ import annotations

from typing import Any

import pytest

from arr_prefect.flows.events import session_payload


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"credentials_block": ""}, {"credentials_block": None}, id="empty-is-null"),
        pytest.param({"credentials_block": None}, {"credentials_block": None}, id="none-stays"),
        pytest.param(
            {"credentials_block": "arr-emulator"},
            {"credentials_block": "arr-emulator"},
            id="name-kept",
        ),
        pytest.param({"renewals": 0}, {"renewals": 0}, id="zero-is-not-empty"),
    ],
)
def test_extra_fields_are_null_when_empty(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    """An event's own field with no value is sent as null, never as an empty string."""
    payload = session_payload("s", size="Standard", api_version="v1", elapsed_seconds=0.0, **extra)
    assert {k: payload[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("price", "cost", "currency"),
    [
        pytest.param(None, None, None, id="no-price"),
        pytest.param(3.0, 0.05, "EUR", id="priced"),
    ],
)
def test_cost_and_currency_need_a_price(
    price: float | None, cost: float | None, currency: str | None
) -> None:
    """A session event carries a cost, and its currency, only with a configured price."""
    payload = session_payload(
        "s",
        size="standard",
        api_version="v1",
        elapsed_seconds=30.0,
        price_per_hour=price,
        currency="EUR",
    )
    assert (payload["billed_minutes"], payload["estimated_cost"], payload["currency"]) == (
        1,
        cost,
        currency,
    )
