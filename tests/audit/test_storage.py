"""The audit table on SQLite and PostgreSQL: batches insert once, the filters and the
cursor, retention as a prefix with an anchor, and ``verify`` on an intact chain, then
on one with a row edited, deleted or replaced."""

from __future__ import annotations

import json
import time

import pytest

from llmux.audit.record import AuditRecord, sealed
from llmux.audit.verify import verify, verify_export
from llmux.storage.audit import Filter, SqlAudit
from tests.audit.conftest import chain

pytestmark = pytest.mark.anyio
NOW_US = time.time_ns() // 1000


async def sql(repo: SqlAudit, statement: str) -> None:
    async with repo.db.engine.begin() as conn:
        await conn.exec_driver_sql(statement)


async def test_a_batch_inserts_once_and_the_filters_find_it(repo: SqlAudit) -> None:
    records = chain("r1", 30, NOW_US - 60_000_000) + chain("r2", 5, NOW_US - 30_000_000)
    assert await repo.add(records) == 35
    assert await repo.add(records[:10]) == 0, "written again: nothing new"
    assert await repo.head("r1") == (30, records[29].hash)
    rows, cursor = await repo.query(Filter(), limit=10)
    assert cursor is not None and [r["replica"] for r in rows[:5]] == ["r2"] * 5, "newest first"
    seen = [(r["replica"], r["seq"]) for r in rows]
    while cursor:
        more, cursor = await repo.query(Filter(), limit=10, cursor=cursor)
        seen += [(r["replica"], r["seq"]) for r in more]
    assert len(seen) == len(set(seen)) == 35, "the cursor pages through everything once"
    by = {
        "principal key:k1": Filter(principal="key:k1"),
        "principal by id": Filter(principal="k1"),
        "principal by name": Filter(principal="key1"),
    }
    ones = {r.seq for r in records if r.principal_id == "k1" and r.replica == "r1"}
    for name, where in by.items():
        found, _ = await repo.query(where, 100)
        assert {r["seq"] for r in found if r["replica"] == "r1"} == ones, name
    found, _ = await repo.query(Filter(model="other", status=(400, 499)), 100)
    assert {(r["model"], r["status"]) for r in found} == {("other", 429)}
    found, _ = await repo.query(Filter(model="m:latest"), 100)
    assert len(found) == 35, "the served name matches too"
    window = Filter(since_us=records[9].time_us, until_us=records[19].time_us)
    found, _ = await repo.query(window, 100)
    assert sorted(r["seq"] for r in found) == list(range(10, 20))
    found, _ = await repo.query(Filter(request_id="r2-req-3"), 100)
    assert [r["hash"] for r in found] == [records[32].hash]
    exported = [r async for r in repo.export(Filter(), page=7)]
    assert len(exported) == 35 and exported[0]["ts"] <= exported[-1]["ts"], "oldest first"
    lines = [json.dumps(r).encode() for r in exported]
    assert verify_export(lines).ok, "an export verifies offline"
    edited = json.loads(lines[3]) | {"status": 201}
    assert not verify_export([*lines[:3], json.dumps(edited).encode(), *lines[4:]]).ok


async def test_verify_finds_edits_gaps_and_replaced_rows(repo: SqlAudit) -> None:
    records = chain("r1", 20, NOW_US - 60_000_000)
    await repo.add(records)
    report = await verify(repo)
    assert report.ok and report.replicas[0].last == 20 and report.replicas[0].rows == 20
    await sql(repo, "UPDATE audit_log SET status = 200 WHERE replica = 'r1' AND seq = 5")
    report = await verify(repo)
    assert [(p.kind, p.seq) for p in report.problems] == [("edited", 5)]
    assert "status" in report.problems[0].detail
    text = records[7].canonical().decode().replace('"served":"m:latest"', '"served":"x"')
    await sql(repo, f"UPDATE audit_log SET record = '{text}' WHERE seq = 8")
    assert ("edited", 8) in [(p.kind, p.seq) for p in (await verify(repo)).problems]
    await sql(repo, "DELETE FROM audit_log WHERE seq IN (12, 13)")
    problems = [(p.kind, p.seq) for p in (await verify(repo)).problems]
    assert ("gap", 12) in problems
    forged = sealed(AuditRecord.from_json(records[16].body() | {"request_id": "forged"}))
    await sql(repo, "DELETE FROM audit_log WHERE seq = 17")
    await repo.add([forged])  # a row put back with a hash of its own
    problems = [(p.kind, p.seq) for p in (await verify(repo)).problems]
    assert ("broken_link", 18) in problems, "the next row's link gives it away"
    missing = await verify(repo, expected={"r1": 25})
    assert ("missing_tail", 21) in [(p.kind, p.seq) for p in missing.problems]


async def test_retention_deletes_a_prefix_and_verify_starts_at_its_anchor(
    repo: SqlAudit,
) -> None:
    day_us = 86_400_000_000
    old = chain("r1", 10, NOW_US - 10 * day_us, step_us=day_us // 10)  # 10..9 days ago
    await repo.add(old)
    recent = chain("r1", 20, NOW_US - day_us)[10:]  # its own links: rebuilt below
    prev = old[-1].hash
    linked = []
    for r in recent:
        r = sealed(AuditRecord.from_json(r.body() | {"prev_hash": prev}))
        linked.append(r)
        prev = r.hash
    await repo.add(linked)
    assert (await verify(repo)).ok
    assert await repo.prune(NOW_US - 5 * day_us) == 10
    report = await verify(repo)
    assert report.ok, report.problems
    assert report.replicas[0].anchor == 10 and report.replicas[0].first == 11
    assert await repo.head("r1") == (20, linked[-1].hash)
    await sql(repo, "DELETE FROM audit_log WHERE seq = 11")  # the oldest, not by retention
    problems = [(p.kind, p.seq) for p in (await verify(repo)).problems]
    assert problems == [("gap", 11)], "a deletion at the start is not retention"
