"""The usage writer on a real SQLite ledger: flushes that overlap the background writer
take no batch twice, a failed commit keeps the batch for the next try, and a full queue
holds new requests back until it drains."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from llmux.config import UsageSettings
from llmux.limits.usage import Entry, UsageLog
from llmux.storage.database import Database, database_url
from llmux.storage.usage import SqlUsage, UsageRecord

pytestmark = pytest.mark.anyio


def record(i: int) -> UsageRecord:
    return UsageRecord(
        id=f"r{i}", request_id="same", created_at=time.time(), day="2026-12-01",
        principal="addr:x", user_id=None, key_id=None, client_id=None, team=None,
        api="openai", route="/v1/chat/completions", kind="chat", model="m", served="m",
        backend="local", stream=False, prompt_tokens=3, completion_tokens=2, cached_tokens=0,
        cost_micros=0, status="ok", http_status=200, latency_ms=1.0, ttft_ms=None,
    )  # fmt: skip


async def test_overlapping_flushes_write_each_record_once(tmp_path: Path) -> None:
    db = Database(database_url(None, tmp_path))
    await db.open()
    log = UsageLog(SqlUsage(db), UsageSettings(batch_size=3, flush_s=0.01))
    log.start()
    for i in range(20):
        log.put(Entry(record(i)))
    await asyncio.gather(log.flush(), log.flush(), log.write_batch())
    await log.aclose()
    rows = await SqlUsage(db).totals([], 0, time.time() + 1)
    assert rows[0]["requests"] == 20 and log.stats["written"] == 20
    await db.aclose()


async def test_a_failed_commit_keeps_the_batch(tmp_path: Path) -> None:
    db = Database(database_url(None, tmp_path))
    await db.open()
    repo = SqlUsage(db)
    log = UsageLog(repo, UsageSettings(batch_size=10))
    for i in range(4):
        log.put(Entry(record(i)))
    real = repo.add
    calls = 0

    async def failing(batch: list[UsageRecord]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("the database went away")
        return await real(batch)

    repo.add = failing  # type: ignore[method-assign]  # a fault, injected once
    with pytest.raises(OSError):
        await log.write_batch()
    assert log.queued == 4
    await log.flush()
    assert log.queued == 0 and (await real([record(0)])) == 0  # already there: no duplicate
    await db.aclose()


async def test_a_full_queue_holds_new_requests_back(tmp_path: Path) -> None:
    db = Database(database_url(None, tmp_path))
    await db.open()
    log = UsageLog(SqlUsage(db), UsageSettings(queue_size=3, batch_size=2))
    for i in range(3):
        log.put(Entry(record(i)))
    waiting = asyncio.ensure_future(log.room())
    await asyncio.sleep(0.05)
    assert not waiting.done() and log.stats["full"] == 1
    await log.write_batch()  # 1 left: room again
    await asyncio.wait_for(waiting, 1)
    await db.aclose()
