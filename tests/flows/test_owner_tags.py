"""Ownership tags: sessions recorded together on one flow run are written in batches."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, get_client, tags
from prefect.client.orchestration import PrefectClient
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner

from arr_prefect.flows import OWNER_TAG_PREFIX, owner_tags, record_session_owner


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


class _Counted:
    """The Prefect client's reads and updates of flow runs, counted from ``start()`` on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = self.updates = 0
        self.counting = False
        self.fail_updates = 0
        read, update = PrefectClient.read_flow_run, PrefectClient.update_flow_run

        async def counted_read(client: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            self.reads += self.counting
            return await read(client, *args, **kwargs)

        async def counted_update(client: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            self.updates += self.counting
            if self.fail_updates:
                self.fail_updates -= 1
                raise ConnectionError("All connection attempts failed")
            return await update(client, *args, **kwargs)

        monkeypatch.setattr(PrefectClient, "read_flow_run", counted_read)
        monkeypatch.setattr(PrefectClient, "update_flow_run", counted_update)

    def start(self) -> None:
        self.reads = self.updates = 0
        self.counting = True


async def _tags_of(run_id: str) -> list[str]:
    async with get_client() as prefect:
        return list((await prefect.read_flow_run(run_id)).tags)  # type: ignore[arg-type]


async def test_a_run_starting_writes_its_owner_tag_without_reading_its_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tags the engine read as the run started are fresh: one update, no read, and the
    run's own tags are kept; a second session a moment later needs no read either."""
    counted = _Counted(monkeypatch)

    @flow
    async def owner() -> str:
        counted.start()
        assert await record_session_owner("fresh-1")
        assert await record_session_owner("fresh-2")
        return str(flow_run.id)

    with tags("kept"):
        run_id = await owner()
    assert (counted.reads, counted.updates) == (0, 2)
    assert set(await _tags_of(run_id)) == {
        "kept",
        f"{OWNER_TAG_PREFIX}fresh-1",
        f"{OWNER_TAG_PREFIX}fresh-2",
    }


async def test_tags_known_from_too_long_ago_are_read_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the window, the run's tags are read again: a tag added from elsewhere (the UI)
    after the run started is kept."""
    monkeypatch.setattr(owner_tags, "OWNER_TAGS_KNOWN_SECONDS", 0.0)
    counted = _Counted(monkeypatch)

    @flow
    async def owner() -> str:
        run_id = str(flow_run.id)
        async with get_client() as prefect:
            await prefect.update_flow_run(UUID(run_id), tags=["from-the-ui"])
        counted.start()
        assert await record_session_owner("stale-1")
        return run_id

    run_id = await owner()
    assert (counted.reads, counted.updates) == (1, 1)
    assert set(await _tags_of(run_id)) == {"from-the-ui", f"{OWNER_TAG_PREFIX}stale-1"}


async def test_after_a_failed_update_the_tags_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An update that failed may or may not have landed: the next write reads first."""
    counted = _Counted(monkeypatch)

    @flow
    async def owner() -> str:
        counted.fail_updates = 1
        counted.start()
        assert not await record_session_owner("lost-1")
        assert await record_session_owner("after-1")
        return str(flow_run.id)

    run_id = await owner()
    assert (counted.reads, counted.updates) == (1, 2)
    assert f"{OWNER_TAG_PREFIX}after-1" in await _tags_of(run_id)


async def test_a_run_whose_tasks_run_in_other_processes_reads_its_tags_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tasks in other processes may tag the run unseen from here: its tags are read."""
    counted = _Counted(monkeypatch)

    # Prefect's flow() is typed for runners of plain PrefectFutures; this one's are a subclass.
    @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]
    async def owner() -> str:
        counted.start()
        assert await record_session_owner("elsewhere-1")
        return str(flow_run.id)

    run_id = await owner()
    assert (counted.reads, counted.updates) == (1, 1)
    assert f"{OWNER_TAG_PREFIX}elsewhere-1" in await _tags_of(run_id)
