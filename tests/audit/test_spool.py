"""The spool and the drainer on real files and a real SQLite database: records go out
in order with their chain, a restart continues the chain (from the spool, or from the
table when the spool is gone), a torn last line is cut off, files rotate and are
deleted once drained, a drain after a lost offset adds nothing twice, two processes
never share a slot, a failed write refuses requests until the spool works again."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path

import pytest

from llmux.audit.drain import STATE, Drainer, load_state
from llmux.audit.record import GENESIS, AuditRecord
from llmux.audit.spool import Spool, claim_slot, spool_files
from llmux.audit.verify import verify
from llmux.storage.audit import Filter, SqlAudit
from llmux.storage.database import Database, database_url

pytestmark = pytest.mark.anyio


def fields(i: int) -> dict[str, object]:
    return {"kind": "model", "request_id": f"req-{i}", "route": "/api/chat", "model": "m"}


def lines(folder: Path) -> list[dict[str, object]]:
    return [json.loads(x) for p in spool_files(folder) for x in p.read_bytes().splitlines()]


async def sqlite_repo(home: Path) -> SqlAudit:
    db = Database(database_url(None, home))
    await db.open()
    return SqlAudit(db)


async def test_records_are_chained_and_a_restart_continues_the_chain(tmp_path: Path) -> None:
    folder, _, lock = claim_slot(tmp_path / "audit")
    spool = Spool(fsync_s=0.01)
    spool.open(folder, "r1")
    written = [spool.append(fields(i)) for i in range(5)]
    spool.close()
    assert [r.seq for r in written] == [1, 2, 3, 4, 5]
    assert written[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(written))
    assert [x["hash"] for x in lines(folder)] == [r.hash for r in written]
    path = spool_files(folder)[-1]
    with path.open("ab") as f:  # a power loss in the middle of a write
        f.write(b'{"replica":"r1","seq":6,"prev')
    again = Spool(fsync_s=0.01)
    again.open(folder, "r1")
    sixth = again.append(fields(6))
    again.close()
    assert sixth.seq == 6 and sixth.prev_hash == written[-1].hash
    assert [x["seq"] for x in lines(folder)] == [1, 2, 3, 4, 5, 6], "the torn line is gone"
    os.close(lock)


async def test_the_chain_continues_from_the_table_when_the_spool_is_gone(tmp_path: Path) -> None:
    folder, _, lock = claim_slot(tmp_path / "audit")
    spool = Spool(fsync_s=0.01)
    spool.open(folder, "r1", stored=(41, "ab" * 32))
    record = spool.append(fields(1))
    spool.close()
    os.close(lock)
    assert record.seq == 42 and record.prev_hash == "ab" * 32


async def test_files_rotate_drain_once_and_are_deleted(tmp_path: Path) -> None:
    repo = await sqlite_repo(tmp_path)
    folder, _, lock = claim_slot(tmp_path / "audit")
    spool = Spool(fsync_s=0.01, rotate_bytes=2000)
    spool.open(folder, "r1")
    for i in range(40):
        spool.append(fields(i))
    assert len(spool_files(folder)) > 3, "rotated"
    drainer = Drainer(folder, repo, batch_size=7)
    assert await drainer.drain() == 40
    assert [p.name for p in spool_files(folder)] == [spool.current.name]  # type: ignore[union-attr]
    assert load_state(folder).seq == 40
    for i in range(40, 45):
        spool.append(fields(i))
    again = Drainer(folder, repo, batch_size=7)  # a restart: it resumes from the offset
    assert await again.drain() == 5
    (folder / STATE).unlink()  # the offset lost: everything in the spool is read again
    lost = Drainer(folder, repo)
    assert await lost.drain() == 0, "the table keeps one row per (replica, seq)"
    spool.close()
    rows, _ = await repo.query(Filter(), 1000)
    assert sorted(r["seq"] for r in rows) == list(range(1, 46))
    assert (await verify(repo)).ok
    os.close(lock)
    await repo.db.aclose()


async def test_a_clash_on_replica_and_seq_is_kept_aside(tmp_path: Path) -> None:
    repo = await sqlite_repo(tmp_path)
    for name in ("a", "b"):  # two spools that were given the same replica id
        folder = tmp_path / name
        folder.mkdir()
        spool = Spool(fsync_s=0.01)
        spool.open(folder, "same")
        spool.append(fields(0) | {"request_id": name})
        spool.close()
        await Drainer(folder, repo).drain()
    kept = (tmp_path / "b" / "conflicts.jsonl").read_text().splitlines()
    assert [json.loads(x)["request_id"] for x in kept] == ["b"]
    await repo.db.aclose()


async def test_two_processes_never_share_a_slot(tmp_path: Path) -> None:
    base = tmp_path / "audit"
    first, slot1, fd1 = claim_slot(base)
    second, slot2, fd2 = claim_slot(base)
    assert (slot1, slot2) == (0, 1) and first != second
    os.close(fd1)  # the first process is gone (a killed process's lock goes with it)
    third, slot3, fd3 = claim_slot(base)
    assert slot3 == 0 and third == first
    os.close(fd2)
    os.close(fd3)


async def test_waiting_for_fsync_resolves_after_the_group_fsync(tmp_path: Path) -> None:
    folder, _, lock = claim_slot(tmp_path / "audit")
    spool = Spool(fsync_s=5.0)  # a long interval: only a waiter makes it flush sooner
    spool.open(folder, "r1")
    records = [spool.append(fields(i)) for i in range(3)]
    waits = [spool.synced(r.seq) for r in records]
    assert all(w is not None for w in waits)
    await asyncio.wait_for(asyncio.gather(*[w for w in waits if w is not None]), 2.0)
    assert spool.synced_seq >= 3
    assert spool.synced(1) is None, "already on disk"
    spool.close()
    os.close(lock)


async def test_a_failed_write_is_kept_and_written_when_it_can_be(tmp_path: Path) -> None:
    folder, _, lock = claim_slot(tmp_path / "audit")
    spool = Spool(fsync_s=0.01)
    spool.open(folder, "r1")
    spool.append(fields(0))
    assert spool._fd is not None
    readonly = os.open(spool_files(folder)[-1], os.O_RDONLY)
    os.dup2(readonly, spool._fd)  # the file can no longer be written (as a full disk refuses)
    os.close(readonly)
    kept = spool.append(fields(1))
    assert spool.failing is not None and kept.seq == 2
    assert spool.retry(), "a new file takes the records that waited"
    spool.append(fields(2))
    spool.close()
    assert [x["seq"] for x in lines(folder)] == [1, 2, 3]
    assert AuditRecord.from_json(lines(folder)[1]).prev_hash == lines(folder)[0]["hash"]
    os.close(lock)


async def test_the_drainer_takes_fresh_rows_and_reads_the_rest(tmp_path: Path) -> None:
    repo = await sqlite_repo(tmp_path)
    folder, _, lock = claim_slot(tmp_path / "audit")
    before = Spool(fsync_s=0.01)  # a process that stopped before its drain
    before.open(folder, "r1")
    for i in range(10):
        before.append(fields(i))
    before.close()
    spool = Spool(fsync_s=0.01, rotate_bytes=3000)  # its successor writes more, rotating
    spool.open(folder, "r1")
    for i in range(10, 25):
        spool.append(fields(i))
    assert len(spool.fresh) == 15
    drainer = Drainer(folder, repo, batch_size=4, spool=spool)
    assert await drainer.drain() == 25
    assert not spool.fresh and drainer.stats["from_memory"] == 15, "what it wrote: from memory"
    report = await verify(repo)
    assert report.ok and report.replicas[0].last == 25, report.problems
    spool.append(fields(25))
    assert await drainer.drain() == 1
    spool.close()
    os.close(lock)
    await repo.db.aclose()


async def test_a_slot_left_by_a_killed_process_is_drained_by_the_next(tmp_path: Path) -> None:
    from llmux.audit.settings import AuditSettings
    from llmux.audit.trail import AuditTrail

    repo = await sqlite_repo(tmp_path)
    base = tmp_path / "audit"
    _, _, first = claim_slot(base)  # two processes ran; the one in slot 1 wrote and died
    left, slot, second = claim_slot(base)
    spool = Spool(fsync_s=0.01)
    spool.open(left, "dead-replica")
    for i in range(3):
        spool.append(fields(i))
    spool.close()
    os.close(second)
    os.close(first)
    trail = AuditTrail(AuditSettings(), tmp_path, repo, b"k" * 32)
    await trail.start()  # takes slot 0, and drains slot 1's spool
    assert trail._adopting is not None and trail.spool.folder == base / "0" and slot == 1
    await asyncio.wait_for(trail._adopting, 5)
    rows, _ = await repo.query(Filter(), 100)
    assert sorted(r["seq"] for r in rows if r["replica"] == "dead-replica") == [1, 2, 3]
    assert spool_files(left) == [], "an orphan's spool is deleted once drained"
    await trail.aclose()
    await repo.db.aclose()
