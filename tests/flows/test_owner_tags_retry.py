"""Owner tags the Prefect API could not take at first (a server restarting, its database
away) are written later, while the session lives or just after: the record is not lost."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, get_client

from arr_prefect.emulator import Emulator
from arr_prefect.flows import OWNER_TAG_PREFIX, SessionReport, owner_tags, rendering_session

pytestmark = [pytest.mark.usefixtures("arr"), pytest.mark.realtime_job]


@pytest.fixture
def api_unreachable_at_first(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first tag write fails as it does while the server restarts; later ones work."""
    real = owner_tags._tag_flow_run
    calls: list[str] = []

    async def flaky(flow_run_id: str, tags: list[str]) -> None:
        calls.append(flow_run_id)
        if len(calls) == 1:
            raise ConnectionError("All connection attempts failed")
        await real(flow_run_id, tags)

    monkeypatch.setattr(owner_tags, "_tag_flow_run", flaky)
    monkeypatch.setattr(owner_tags, "OWNER_TAG_RETRY_SECONDS", 0.2)
    return calls


async def test_a_failed_tag_is_written_later(
    api_unreachable_at_first: list[str], emulator: Emulator, api_version: str
) -> None:
    """The first write fails; the run still ends up tagged with its session."""
    report = SessionReport()

    @flow
    async def one() -> str:
        async with rendering_session(report=report):
            await asyncio.sleep(1)
        from prefect.runtime import flow_run

        return str(flow_run.id)

    run_id = await one()
    async with get_client() as prefect:
        tags: Any = (await prefect.read_flow_run(UUID(run_id))).tags
    assert f"{OWNER_TAG_PREFIX}{report.session_id}" in tags
    assert len(api_unreachable_at_first) >= 2


async def test_a_tag_still_missing_at_teardown_gets_a_last_chance(
    api_unreachable_at_first: list[str], emulator: Emulator, api_version: str
) -> None:
    """A body shorter than the retry period: the tag is written after the stop."""
    report = SessionReport()

    @flow
    async def one() -> str:
        async with rendering_session(report=report):
            pass
        from prefect.runtime import flow_run

        return str(flow_run.id)

    run_id = await one()
    async with get_client() as prefect:
        tags: Any = (await prefect.read_flow_run(UUID(run_id))).tags
    assert f"{OWNER_TAG_PREFIX}{report.session_id}" in tags
    assert emulator.running() == []
