"""The Batch API's batches, on SQLite or PostgreSQL: one row per batch (its state, counts,
timestamps and the lease of the replica working it) and one row per finished line (its
output or error line, written once: the key is the batch and the line number).

Leases make one replica at a time work a batch. :meth:`SqlBatches.claim` takes a batch
that is not leased, or whose lease ran out (its replica died), with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL so replicas claiming at once each get a different one; SQLite has
one writer at a time and takes the lease with the same conditional update. Every write of
a worker names its lease: once the lease has gone to another replica, the write changes
nothing and the worker learns it has lost the batch (:class:`LeaseLost`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    delete,
    or_,
    select,
    tuple_,
    update,
)

from llmux.storage.database import Database

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
STAMPS = (
    "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at",
)  # fmt: skip

_meta = MetaData()
batches = Table(
    "batches",
    _meta,
    Column("id", Text, primary_key=True),
    Column("owner", Text),
    Column("principal", Text),
    Column("endpoint", Text),
    Column("input_file_id", Text),
    Column("completion_window", Text),
    Column("status", Text),
    Column("metadata", Text),
    Column("errors", Text),
    Column("output_file_id", Text),
    Column("error_file_id", Text),
    Column("total", Integer),
    Column("completed", Integer),
    Column("failed", Integer),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("created_at", BigInteger),
    Column("expires_at", BigInteger),
    *(Column(name, BigInteger) for name in STAMPS),
    Column("lease_owner", Text),
    Column("lease_until", Float),
)
lines = Table(
    "batch_lines",
    _meta,
    Column("batch_id", Text, primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", Text),
    Column("ok", Integer),
    Column("result", Text),
)


class LeaseLost(Exception):
    """The batch's lease went to another replica (this one stalled past it)."""


@dataclass(slots=True)
class BatchRow:
    id: str
    owner: str | None
    principal: str  # the creator's principal, JSON (batch/batches.py reads it)
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    metadata: str | None = None  # JSON
    errors: str | None = None  # JSON: the validation errors' list
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    lease_owner: str | None = None
    lease_until: float | None = None


@dataclass(frozen=True, slots=True)
class LineResult:
    """A finished line: its output line (``ok``) or error line, as JSON text."""

    line: int
    custom_id: str | None
    ok: bool
    result: str
    input_tokens: int = 0
    output_tokens: int = 0


_COLUMNS = tuple(f.name for f in fields(BatchRow))


def _row(found: Any) -> BatchRow:
    return BatchRow(**{name: found._mapping[name] for name in _COLUMNS})


class SqlBatches:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, row: BatchRow) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(batches.insert().values(**{n: getattr(row, n) for n in _COLUMNS}))

    async def get(self, batch_id: str) -> BatchRow | None:
        async with self.db.engine.connect() as conn:
            found = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        return _row(found) if found is not None else None

    async def list(self, owner: str | None, *, after: str | None, limit: int) -> list[BatchRow]:
        """``owner``'s batches (every batch with None), newest first, after ``after``."""
        query = select(batches)
        if owner is not None:
            query = query.where(batches.c.owner == owner)
        if after:
            mark = await self.get(after)
            if mark is not None:
                key = tuple_(batches.c.created_at, batches.c.id)
                query = query.where(key < tuple_(mark.created_at, mark.id))
        order = (batches.c.created_at.desc(), batches.c.id.desc())
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(*order).limit(limit))).all()
        return [_row(r) for r in rows]

    async def set_status(
        self, batch_id: str, status: str, *, only_from: Sequence[str], **values: Any
    ) -> bool:
        """Move a batch to ``status`` (stamping ``<status>_at`` when it has one) if it is
        in one of ``only_from``; False when it was not."""
        stamp = f"{status}_at"
        if stamp in STAMPS:
            values.setdefault(stamp, int(time.time()))
        async with self.db.engine.begin() as conn:
            done = await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.status.in_(only_from))
                .values(status=status, **values)
            )
        return bool(done.rowcount)

    # -- the worker's side: leases -----------------------------------------------------
    async def claim(self, worker: str, lease_s: float) -> BatchRow | None:
        """Lease the oldest active batch no live replica holds, or None."""
        now = time.time()
        free = or_(batches.c.lease_until.is_(None), batches.c.lease_until < now)
        pick = (
            select(batches.c.id)
            .where(batches.c.status.in_(ACTIVE), free)
            .order_by(batches.c.created_at, batches.c.id)
            .limit(1)
        )
        if self.db.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        async with self.db.engine.begin() as conn:
            found = (await conn.execute(pick)).first()
            if found is None:
                return None
            took = await conn.execute(
                update(batches)
                .where(batches.c.id == found[0], free)
                .values(lease_owner=worker, lease_until=now + lease_s)
            )
            if not took.rowcount:
                return None
            row = (await conn.execute(select(batches).where(batches.c.id == found[0]))).first()
        return _row(row) if row is not None else None

    async def renew(self, batch_id: str, worker: str, lease_s: float) -> BatchRow:
        """Extend the lease and read the batch again (a cancel shows here); raises
        :class:`LeaseLost` when another replica holds it now."""
        async with self.db.engine.begin() as conn:
            took = await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(lease_until=time.time() + lease_s)
            )
            if not took.rowcount:
                raise LeaseLost(batch_id)
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        assert row is not None
        return _row(row)

    async def release(self, batch_id: str, worker: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(lease_owner=None, lease_until=None)
            )

    async def update_leased(self, batch_id: str, worker: str, **values: Any) -> None:
        """Change a batch this worker holds; :class:`LeaseLost` when it does not."""
        async with self.db.engine.begin() as conn:
            done = await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(**values)
            )
        if not done.rowcount:
            raise LeaseLost(batch_id)

    # -- the worker's side: lines -------------------------------------------------------
    async def record(self, batch_id: str, worker: str, results: Sequence[LineResult]) -> None:
        """Store finished lines and add them to the counts, in one transaction that
        commits only while this worker holds the lease."""
        if not results:
            return
        ok = sum(1 for r in results if r.ok)
        async with self.db.engine.begin() as conn:
            held = await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(
                    completed=batches.c.completed + ok,
                    failed=batches.c.failed + (len(results) - ok),
                    input_tokens=batches.c.input_tokens + sum(r.input_tokens for r in results),
                    output_tokens=batches.c.output_tokens + sum(r.output_tokens for r in results),
                )
            )
            if not held.rowcount:
                raise LeaseLost(batch_id)  # the transaction rolls back: nothing recorded
            await conn.execute(
                lines.insert(),
                [
                    {"batch_id": batch_id, "line": r.line, "custom_id": r.custom_id,
                     "ok": int(r.ok), "result": r.result}
                    for r in results
                ],
            )  # fmt: skip

    async def finished_lines(self, batch_id: str) -> set[int]:
        async with self.db.engine.connect() as conn:
            found = await conn.execute(select(lines.c.line).where(lines.c.batch_id == batch_id))
            return {row[0] for row in found}

    async def results(self, batch_id: str, *, ok: bool, page: int = 1000) -> AsyncIterator[str]:
        """The stored output (``ok``) or error lines, in line order, read a page at a time."""
        after = -1
        while True:
            query = (
                select(lines.c.line, lines.c.result)
                .where(and_(lines.c.batch_id == batch_id, lines.c.ok == int(ok), lines.c.line > after))
                .order_by(lines.c.line)
                .limit(page)
            )  # fmt: skip
            async with self.db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield row[1]
            if len(rows) < page:
                return
            after = rows[-1][0]

    async def drop_lines(self, batch_id: str) -> None:
        """Forget a finished batch's line rows (its output and error files hold them)."""
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(lines).where(lines.c.batch_id == batch_id))


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
