"""The usage ledger on SQLite and PostgreSQL: a batch larger than one statement's worth
of rows is written whole, every column comes back as written, a batch written again
adds nothing, and the scope indexes are the partial ones (migration 6) that the budget
and report queries use."""

from __future__ import annotations

import dataclasses
import time

import pytest

from llmux.core.context import new_request_id
from llmux.storage.database import Database
from llmux.storage.usage import ROWS_PER_INSERT, BudgetRow, SqlUsage, UsageRecord

pytestmark = pytest.mark.anyio


def record(i: int, now: float) -> UsageRecord:
    keyed = i % 3 == 0
    return UsageRecord(
        id=new_request_id(), request_id=f"req-{i}", created_at=now + i / 1000,
        day="2026-12-02", principal="key:k1" if keyed else f"addr:10.0.0.{i % 7}",
        user_id="u1" if keyed else None, key_id="k1" if keyed else None, client_id=None,
        team="physics" if keyed else None, api="openai", route="/v1/chat/completions",
        kind="chat", model="m", served="m", backend="relay", stream=i % 2 == 0,
        prompt_tokens=i, completion_tokens=2 * i, cached_tokens=i % 5, cost_micros=10 * i,
        status="ok", http_status=200, latency_ms=1.5, ttft_ms=None if i % 2 else 0.25,
    )  # fmt: skip


async def test_a_large_batch_is_written_whole_and_once(db: Database) -> None:
    repo = SqlUsage(db)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql("DELETE FROM usage_records")
    now = time.time()
    batch = [record(i, now) for i in range(2 * ROWS_PER_INSERT + 17)]
    assert await repo.add(batch) == len(batch)
    again = await repo.add([*batch[:50], record(10_000, now)])  # a retried write
    if db.dialect == "sqlite":  # PostgreSQL's executemany reports no row count
        assert again == 1
    rows = await repo.totals(["key"], now - 1, now + 100)
    by_key = {row["key"]: row for row in rows}
    keyed = [r for r in batch if r.key_id]
    assert by_key["k1"]["requests"] == len(keyed)
    assert by_key["k1"]["completion_tokens"] == sum(r.completion_tokens for r in keyed)
    assert sum(row["requests"] for row in rows) == len(batch) + 1
    async with db.engine.connect() as conn:
        got = (
            await conn.exec_driver_sql(
                "SELECT * FROM usage_records WHERE request_id = 'req-3'"
            )
        ).mappings().one()  # fmt: skip
    want = dataclasses.asdict(batch[3])
    back = {k: bool(got[k]) if k == "stream" else got[k] for k in want}  # SQLite: 0 / 1
    assert back == pytest.approx(want)
    spent = await repo.spent(BudgetRow("b", "team:physics", "day", 1), now - 1, now + 100)
    assert spent == sum(r.cost_micros for r in keyed)


async def test_the_scope_indexes_hold_only_records_with_that_scope(db: Database) -> None:
    if db.dialect == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'usage_records'"
    else:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_records'"
    async with db.engine.connect() as conn:
        found = {name: sql or "" for name, sql in (await conn.exec_driver_sql(query)).all()}
    for name, column in (("user", "user_id"), ("key", "key_id"), ("client", "client_id"),
                         ("team", "team")):  # fmt: skip
        assert "is not null" in found[f"usage_{name}"].lower(), found[f"usage_{name}"]
        assert column in found[f"usage_{name}"]


def test_record_ids_sort_by_time_and_do_not_repeat() -> None:
    made = []
    for _ in range(3):
        made += [new_request_id() for _ in range(1000)]
        time.sleep(0.002)
    assert len(set(made)) == len(made)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    firsts = [made[0], made[1000], made[2000]]
    assert firsts == sorted(firsts) and firsts[0][:12] < firsts[2][:12]
