"""Ownership tags: sessions recorded together on one flow run are written in batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prefect import flow, get_client, tags
from prefect.client.orchestration import PrefectClient
from prefect.runtime import flow_run

from arr_prefect.flows import OWNER_TAG_PREFIX, record_session_owner


async def test_concurrent_owners_are_all_tagged_in_few_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 sessions recorded at once all land on the run, in far fewer than 40 updates."""
    updates = 0
    original = PrefectClient.update_flow_run

    async def counting(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
        nonlocal updates
        updates += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(PrefectClient, "update_flow_run", counting)
    ids = [f"owned-{index}" for index in range(40)]

    @flow
    async def owner() -> str:
        await asyncio.gather(*(record_session_owner(sid) for sid in ids))
        return str(flow_run.id)

    with tags("kept"):
        run_id = await owner()
    async with get_client() as prefect:
        run = await prefect.read_flow_run(run_id)  # type: ignore[arg-type]
    assert {t for t in run.tags if t.startswith(OWNER_TAG_PREFIX)} == {
        f"{OWNER_TAG_PREFIX}{sid}" for sid in ids
    }
    assert "kept" in run.tags
    assert 1 <= updates <= 5, updates
