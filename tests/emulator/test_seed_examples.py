"""The seed's own PowerShell examples, sent as they are written, work on the emulator."""

from __future__ import annotations

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator.request import parse_lenient_json
from tests.emulator._support import ACCOUNT


async def test_seed_create_and_update_bodies_with_single_quotes(
    client: httpx.AsyncClient, auth: dict[str, str], clock: VirtualClock
) -> None:
    """The seed sends `{ 'maxLeaseTime': '4:0:0', ... }` (Json.NET accepted it): so do we."""
    headers = {**auth, "Content-Type": "application/json"}
    created = await client.post(
        f"/v1/Accounts/{ACCOUNT}/sessions/Create",
        content="{ 'maxLeaseTime': '4:0:0', 'models': [], 'size': 'standard' }",
        headers=headers,
    )
    assert created.status_code == 202, created.text
    session_id = created.json()["sessionId"]
    clock.advance(60)
    updated = await client.patch(
        f"/v1/accounts/{ACCOUNT}/sessions/{session_id}",
        content="{ 'maxLeaseTime': '5:0:0' }",
        headers=headers,
    )
    assert updated.status_code == 200
    assert updated.content == b""
    properties = await client.get(
        f"/v1/accounts/{ACCOUNT}/sessions/{session_id}/properties", headers=auth
    )
    assert properties.json()["sessionMaxLeaseTime"] == "05:00:00"
    stopped = await client.delete(f"/v1/accounts/{ACCOUNT}/sessions/{session_id}", headers=auth)
    assert stopped.status_code == 204


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b'{"a": "b"}', {"a": "b"}, id="json"),
        pytest.param(b"{'a': 'b', 'n': 1, 't': true, 'z': null}", {"a": "b", "n": 1, "t": True, "z": None}, id="single-quotes"),
        pytest.param(b"{'a': 'it\\'s'}", {"a": "it's"}, id="escaped-quote"),
        pytest.param(b"{'a': 'say \"hi\"'}", {"a": 'say "hi"'}, id="double-inside-single"),
        pytest.param(b"\xef\xbb\xbf{'a': []}", {"a": []}, id="utf8-bom"),
    ],
)  # fmt: skip
def test_lenient_json_accepts(raw: bytes, expected: object) -> None:
    """Bodies Json.NET accepted parse to the same object."""
    assert parse_lenient_json(raw) == expected


@pytest.mark.parametrize("raw", [b"{'a': }", b"{'a'", b"'x", b"{a: 1}", b"not json"])
def test_lenient_json_still_refuses_garbage(raw: bytes) -> None:
    """Anything else is still a 400-worthy ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - json's own error, message varies
        parse_lenient_json(raw)


async def test_json_answers_carry_the_services_content_type(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """Answers say `application/json; charset=utf-8`, as the seed's captured responses do."""
    response = await client.get(f"/v1/accounts/{ACCOUNT}/sessions", headers=auth)
    assert response.headers["content-type"] == "application/json; charset=utf-8"


async def test_whole_number_float_minutes_are_accepted(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """`maxLeaseTimeMinutes: 15.0` is 15 minutes (Json.NET read it so); 15.5 is refused."""
    path = f"/accounts/{ACCOUNT}/sessions/float-minutes"
    params = {"api-version": "2021-01-01"}
    created = await client.put(
        path, params=params, json={"maxLeaseTimeMinutes": 15.0, "size": "Standard"}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["maxLeaseTimeMinutes"] == 15
    refused = await client.patch(
        path, params=params, json={"maxLeaseTimeMinutes": 20.5}, headers=auth
    )
    assert refused.status_code == 400
    await client.post(f"{path}/:stop", params=params, headers=auth)
