"""The quota off the hot path: with no such limit, the empty lease the server made is
handed back beside the session, not before its create (quota.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import anyio
import pytest
from prefect.client.orchestration import PrefectClient

from arr_prefect.flows import quota
from arr_prefect.flows.quota import SessionSlot


async def test_no_such_limit_does_not_wait_for_the_empty_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """acquire returns while the empty lease's give-back is still in flight, which then ends."""
    let_go = asyncio.Event()
    handed_back: list[Any] = []
    release = PrefectClient.release_concurrency_slots_with_lease

    async def held(self: PrefectClient, **kwargs: Any) -> Any:
        await let_go.wait()
        handed_back.append(kwargs["lease_id"])
        return await release(self, **kwargs)

    monkeypatch.setattr(PrefectClient, "release_concurrency_slots_with_lease", held)
    slot = SessionSlot(f"arr-no-such-limit-{uuid4().hex[:12]}", lease_seconds=60)
    with anyio.fail_after(30):
        await slot.acquire()
    assert not slot.enforced
    assert handed_back == []
    assert len(quota._BACKGROUND) == 1
    let_go.set()
    with anyio.fail_after(30):
        await asyncio.gather(*quota._BACKGROUND)
    assert len(handed_back) == 1
    await slot.release()  # nothing held: a no-op
