"""Reading session lists: one pass from the bytes, and an unreadable item named clearly."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic_core import SchemaValidator, core_schema

from arr_prefect.clock import VirtualClock
from arr_prefect.dialects import DIALECTS, Dialect, SessionCalls
from arr_prefect.dialects import base as dialect_base
from arr_prefect.dialects.base import STATUS, STR, WireField, function, memoized, wire_field
from arr_prefect.errors import ArrHTTPError
from arr_prefect.models import Session, SessionSize
from tests.unit.test_client import (
    V1,
    V2021,
    FakeArr,
    make_client,
    reply,
    sessions_path,
    v1_props,
    v2021_props,
)

THOUSAND = 1000
BAD = 412


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def thousand(api_version: str, bad: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A page of 1,000 sessions; item ``BAD`` overridden by ``bad``."""
    make = v1_props if api_version == V1 else v2021_props
    items = [make(sid=f"s{i}") for i in range(THOUSAND)]
    if bad is not None:
        items[BAD] = {**items[BAD], **bad}
    return items


@pytest.mark.parametrize(
    ("api_version", "bad", "named"),
    [
        pytest.param(
            V1, {"sessionMaxLeaseTime": "4h"}, ["sessions[412].sessionMaxLeaseTime", "'4h'"],
            id="v1-timespan",
        ),
        pytest.param(
            V1, {"sessionStatus": "Asleep"}, ["sessions[412].sessionStatus", "Asleep"],
            id="v1-status",
        ),
        pytest.param(V1, {"sessionId": None}, ["sessions[412].sessionId"], id="v1-id-null"),
        pytest.param(
            V2021, {"maxLeaseTimeMinutes": "15"}, ["sessions[412].maxLeaseTimeMinutes", "'15'"],
            id="2021-minutes-string",
        ),
        pytest.param(
            V2021, {"size": "Huge"}, ["sessions[412].size", "Huge"], id="2021-size",
        ),
        pytest.param(
            V2021, {"creationTime": "yesterday"}, ["sessions[412].creationTime", "yesterday"],
            id="2021-time",
        ),
    ],
)  # fmt: skip
def test_a_bad_item_among_a_thousand_is_named(
    api_version: str, bad: dict[str, Any], named: list[str]
) -> None:
    """The whole page is refused, naming the item's index, its wire field and its value."""
    with pytest.raises(ValueError, match=r"^sessions\[412\]") as info:
        DIALECTS[api_version].parse_page(body({"sessions": thousand(api_version, bad)}))
    message = str(info.value)
    assert all(part in message for part in named), message
    assert "more" not in message  # one bad item, one fault
    assert len(message) < 400


def test_many_faults_are_counted_not_listed() -> None:
    """A page where every item is bad names the first and counts the rest."""
    items = [{"sessionStatus": "Ready"}] * 50
    with pytest.raises(
        ValueError, match=r"^sessions\[0\]\.sessionId: Field required; and 49 more$"
    ):
        DIALECTS[V1].parse_page(body({"sessions": items}))


@pytest.mark.parametrize("api_version", [pytest.param(V1, id="v1"), pytest.param(V2021, id="2021")])
async def test_client_error_names_the_bad_item(api_version: str) -> None:
    """list_sessions raises an ArrHTTPError saying which item and field, with the MS-CV."""
    fake = FakeArr(VirtualClock(start=0.0, autojump=True))
    bad = {"sessionStatus": "Asleep"} if api_version == V1 else {"status": "Asleep"}
    page = {"sessions": thousand(api_version, bad)}
    fake.on("GET", sessions_path(api_version), then=reply(200, page, {"MS-CV": "CV-L.1"}))
    async with make_client(fake, api_version) as arr:
        with pytest.raises(ArrHTTPError, match=r"unreadable answer: sessions\[412\]\.") as info:
            await arr.list_sessions()
    assert "Asleep" in str(info.value)
    assert "CV-L.1" in str(info.value)


VARIED = {
    V1: [
        v1_props(sid="a"),
        v1_props(sid="b", status="Starting", lease="1.02:30:00", elapsed="0:0:0"),
        {**v1_props(sid="c"), "sessionSize": " Premium ", "sessionHostname": ""},
        {**v1_props(sid="d", status="Error", message="no capacity"), "sessionMaxLeaseTime": ""},
        {**v1_props(sid="e"), "handshakePort": 50001, "arrInspectorPort": 50000},
    ],
    V2021: [
        v2021_props(sid="a"),
        v2021_props(sid="b", status="Starting", lease=1440),
        v2021_props(sid="c", status="Error", message="no capacity"),
        {**v2021_props(sid="d"), "creationTime": "2022-03-01T10:00:00.1234560+00:00"},
        {"id": "e", "status": "expired", "size": "premium", "teraflops": 8.1, "error": None},
    ],
}


@pytest.mark.parametrize("api_version", [pytest.param(V1, id="v1"), pytest.param(V2021, id="2021")])
def test_one_pass_reads_what_two_passes_read(api_version: str) -> None:
    """Sessions built in one pass equal those of a typed dict then Session's validation."""
    dialect = DIALECTS[api_version]
    content = body({"sessions": VARIED[api_version], "@nextLink": "https://arr.test/next"})
    chained = SchemaValidator(
        dialect_base._page_schema(dialect_base._chained_schema(dialect.wire_fields))
    ).validate_json(content)
    sessions, next_link = dialect.parse_page(content)
    assert (sessions, next_link) == (chained["sessions"], chained["next_link"])
    assert all(type(s) is Session for s in sessions)
    # Not the two-pass fallback (taken if pydantic-core used Session's prebuilt
    # validator, which reads field names, not wire names).
    assert dialect.reads_in_one_pass


@pytest.mark.parametrize("api_version", [pytest.param(V1, id="v1"), pytest.param(V2021, id="2021")])
def test_sessions_share_a_fields_set_that_a_copy_never_changes(api_version: str) -> None:
    """Every Session read says its version's fields are set; a model_copy leaves others be."""
    dialect = DIALECTS[api_version]
    first, second, *_ = dialect.parse_page(body({"sessions": VARIED[api_version]}))[0]
    carried = set(dialect.wire_fields)
    assert first.model_fields_set == second.model_fields_set == carried
    changed = first.model_copy(update={"teraflops": 1.5, "created_at": None})
    assert changed.teraflops == 1.5
    assert {"teraflops", "created_at"} <= changed.model_fields_set
    assert second.model_fields_set == carried
    assert dialect.parse_session(body(VARIED[api_version][0])).model_fields_set == carried


class Toy(Dialect):
    """A made-up version whose lease reader returns text, not a duration."""

    api_version: ClassVar[str] = "toy-careless"
    client_chooses_session_id: ClassVar[bool] = True
    wire_fields: ClassVar[dict[str, WireField]] = {
        "id": wire_field("name", STR, required=True),
        "status": wire_field("state", STATUS, required=True),
        "max_lease": wire_field("leaseSeconds", function(lambda v: f"{v} seconds")),
    }

    def stop_request(self, session_id: str) -> tuple[str, tuple[str, ...]]:
        return "POST", (session_id, "end")

    def size_on_wire(self, size: SessionSize) -> str:
        return size.value

    async def create(
        self,
        calls: SessionCalls,
        *,
        lease: timedelta,
        size: SessionSize,
        models: Any,
        session_id: str | None,
    ) -> Session:
        raise NotImplementedError  # parsing only

    async def extend(self, calls: SessionCalls, session_id: str, lease: timedelta) -> Session:
        raise NotImplementedError  # parsing only


def test_a_reader_of_the_wrong_type_is_refused() -> None:
    """A dialect's reader returning a value of the wrong type cannot reach a Session."""
    with pytest.raises(ValueError, match=r"^leaseSeconds: .*duration"):
        Toy().parse_session(body({"name": "a", "state": "Ready", "leaseSeconds": 60}))


MEMO_READS: list[int] = []


def _lease_as_text(value: int) -> timedelta | str:
    MEMO_READS.append(value)
    return f"{value} seconds" if value < 0 else timedelta(seconds=value)


class ToyMemo(Toy):
    """A made-up version with memoized readers: a lease that is text for negative
    numbers, and a status that may be null, which Session's status is not."""

    api_version: ClassVar[str] = "toy-careless-memo"
    wire_fields: ClassVar[dict[str, WireField]] = {
        "id": wire_field("name", STR, required=True),
        "status": wire_field("state", core_schema.nullable_schema(STATUS), required=True),
        "max_lease": wire_field(
            "leaseSeconds", memoized(core_schema.int_schema(strict=True), _lease_as_text)
        ),
    }


def test_a_memoized_reader_is_checked_once_per_spelling() -> None:
    """A memoized reader's values are checked against the Session field once, when first
    read; one of the wrong type is refused, naming the field, every time."""
    MEMO_READS.clear()
    dialect = ToyMemo()  # as DIALECTS holds one of each version
    page = [{"name": f"s{i}", "state": "Ready", "leaseSeconds": 60} for i in range(50)]
    sessions, _ = dialect.parse_page(body({"sessions": page}))
    assert {session.max_lease for session in sessions} == {timedelta(seconds=60)}
    dialect.parse_page(body({"sessions": page}))
    assert dialect.parse_session(body(page[0])).max_lease == timedelta(seconds=60)
    assert MEMO_READS == [60]  # one read, the check with it, for 101 sessions
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^leaseSeconds: .*duration"):
            dialect.parse_session(body({"name": "a", "state": "Ready", "leaseSeconds": -1}))
    with pytest.raises(ValueError, match=r"^state: "):
        dialect.parse_session(body({"name": "a", "state": None}))


def test_memo_reads_each_spelling_once_and_is_bounded() -> None:
    """A memoized field calls its reader once per spelling, and forgets past its limit."""
    calls: list[str] = []

    def read(value: str) -> int:
        calls.append(value)
        return len(value)

    validator = SchemaValidator(memoized(STR, read, limit=3))
    assert [validator.validate_python(v) for v in ["a", "bb", "a", "bb", "ccc"]] == [1, 2, 1, 2, 3]
    assert calls == ["a", "bb", "ccc"]
    validator.validate_python("dddd")  # a fourth spelling: the memo starts afresh
    validator.validate_python("a")
    assert calls == ["a", "bb", "ccc", "dddd", "a"]
