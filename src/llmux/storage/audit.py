"""The audit trail's table, on SQLite or PostgreSQL (``audit/`` for the chain).

A row is one record: its canonical JSON as it was hashed (``record``), its ``hash``, and
the columns the filters use, copied from the record (``audit verify`` checks they still
agree). Rows are keyed by ``(replica, seq)``, so draining a spool again inserts only
what is missing. Retention deletes a replica's oldest rows as a prefix of its chain and
leaves an **anchor** (the last deleted row's seq and hash), from which ``verify``
continues. :data:`PG_RECIPE` is the PostgreSQL recipe that makes the table
append-only for the server's role (docs/observability.md#audit-trail).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
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
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from llmux.audit.record import AuditRecord, parse_iso_us, split_line
from llmux.storage.database import Database

_meta = MetaData()
audit_log = Table(
    "audit_log",
    _meta,
    Column("replica", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("time_us", BigInteger),
    Column("kind", Text),
    Column("request_id", Text),
    Column("principal", Text),
    Column("principal_name", Text),
    Column("model", Text),
    Column("served", Text),
    Column("status", Integer),
    Column("hash", Text),
    Column("record", Text),
)
audit_anchors = Table(
    "audit_anchors",
    _meta,
    Column("replica", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("hash", Text),
    Column("pruned_at", Float),
)
PRINCIPAL_KINDS = ("user", "key", "client", "token")
COLUMNS = tuple(c.name for c in audit_log.columns)
# SQLite allows 32,766 parameters in a statement (999 before 3.32)
_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999
ROWS_PER_INSERT = max(1, _PARAMETERS // len(COLUMNS) // 2)


def row_of(record: AuditRecord) -> dict[str, Any]:
    """A record as its row: the columns come from the record itself."""
    return columns(record.body(), record.canonical().decode(), record.hash)


def columns(
    data: dict[str, Any], form: str, digest: str, time_us: int | None = None
) -> dict[str, Any]:
    """The row of a record's fields, its canonical form and its hash."""
    pid = data.get("principal_id")
    return {
        "replica": data["replica"],
        "seq": data["seq"],
        "time_us": parse_iso_us(data["ts"]) if time_us is None else time_us,
        "kind": data["kind"],
        "request_id": data["request_id"],
        "principal": f"{data.get('principal_kind')}:{pid}" if pid else "anonymous",
        "principal_name": data.get("principal_name", "anonymous"),
        "model": data.get("model"),
        "served": data.get("served"),
        "status": data.get("status", 200),
        "hash": digest,
        "record": form,
    }


def line_of(row: dict[str, Any]) -> bytes:
    """The spool line a row was drained from."""
    return str(row["record"])[:-1].encode() + b',"hash":"' + str(row["hash"]).encode() + b'"}\n'


def row_from_line(line: bytes) -> dict[str, Any]:
    """A spool line's row, its canonical form cut from the line as it was hashed (a
    ValueError when the line is not a record, or not the one its hash is of)."""
    try:
        form, digest = split_line(line)
    except ValueError:  # another spelling (a line kept aside): the slow way
        data = json.loads(line)
        return row_of(AuditRecord.from_json(data))
    if hashlib.sha256(form).hexdigest() != digest:
        raise ValueError("the line does not match its hash")
    return columns(json.loads(form), form.decode(), digest)


@dataclass(frozen=True, slots=True)
class Filter:
    """What a query asks for; None: no condition."""

    since_us: int | None = None
    until_us: int | None = None
    principal: str | None = None  # kind:id, an id, or a name
    model: str | None = None  # requested or served
    status: tuple[int, int] | None = None  # [low, high]
    kind: str | None = None
    request_id: str | None = None

    def where(self) -> list[Any]:
        c = audit_log.c
        out: list[Any] = []
        if self.since_us is not None:
            out.append(c.time_us >= self.since_us)
        if self.until_us is not None:
            out.append(c.time_us < self.until_us)
        if self.principal:
            p = self.principal
            if ":" in p or p == "anonymous":
                out.append(c.principal == p)
            else:
                named = [f"{k}:{p}" for k in PRINCIPAL_KINDS]
                out.append(or_(c.principal.in_(named), c.principal_name == p))
        if self.model:
            out.append(or_(c.model == self.model, c.served == self.model))
        if self.status is not None:
            out.append(c.status.between(*self.status))
        if self.kind:
            out.append(c.kind == self.kind)
        if self.request_id:
            out.append(c.request_id == self.request_id)
        return out


def encode_cursor(row: Any) -> str:
    raw = json.dumps([row.time_us, row.replica, row.seq]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str, int]:
    """A cursor's (time_us, replica, seq); a ValueError when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        time_us, replica, seq = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a cursor this server made") from exc
    if not (isinstance(time_us, int) and isinstance(replica, str) and isinstance(seq, int)):
        raise ValueError("not a cursor this server made")
    return time_us, replica, seq


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row as ``verify`` reads it."""

    replica: str
    seq: int
    time_us: int
    kind: str
    request_id: str
    principal: str
    principal_name: str
    model: str | None
    served: str | None
    status: int
    hash: str
    record: str


class SqlAudit:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sql: dict[int, str] = {}

    def _insert(self) -> Any:
        return (postgresql if self.db.dialect == "postgresql" else sqlite).insert

    async def add(self, records: Sequence[AuditRecord]) -> int:
        """Insert the records not there yet, in one transaction; how many were new."""
        return await self.add_rows([row_of(r) for r in records])

    async def add_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        """:meth:`add` for rows made already (:func:`columns`), straight to the driver
        as tuples: on SQLite many rows to a statement, on PostgreSQL a pipelined
        executemany; little work on the event loop per row."""
        if not rows:
            return 0
        values = [tuple(r[c] for c in COLUMNS) for r in rows]
        async with self.db.engine.begin() as conn:
            before = await self._count(conn, rows)
            if self.db.dialect != "sqlite":
                await conn.exec_driver_sql(self._statement(1), values)
            else:
                for at in range(0, len(values), ROWS_PER_INSERT):
                    part = values[at : at + ROWS_PER_INSERT]
                    flat = tuple(v for row in part for v in row)
                    await conn.exec_driver_sql(self._statement(len(part)), flat)
            after = await self._count(conn, rows)
        return after - before

    def _statement(self, rows: int) -> str:
        """The insert of ``rows`` rows in the driver's own dialect, made once per count."""
        found = self._sql.get(rows)
        if found is None:
            statement = self._insert()(audit_log).on_conflict_do_nothing(
                index_elements=["replica", "seq"]
            )
            one = str(statement.compile(dialect=self.db.engine.dialect))
            if rows > 1:
                start = one.index(" VALUES (") + len(" VALUES ")
                end = one.index(")", start) + 1
                one = one[:start] + ", ".join([one[start:end]] * rows) + one[end:]
            if len(self._sql) > 64:
                self._sql.clear()
            found = self._sql[rows] = one
        return found

    @staticmethod
    async def _count(conn: Any, rows: Sequence[dict[str, Any]]) -> int:
        replicas = {r["replica"] for r in rows}
        low, high = min(r["seq"] for r in rows), max(r["seq"] for r in rows)
        c = audit_log.c
        query = select(func.count()).where(c.replica.in_(replicas), c.seq.between(low, high))
        return int((await conn.execute(query)).scalar_one())

    async def hashes(self, replica: str, seqs: Sequence[int]) -> dict[int, str]:
        """The stored hash of each of ``seqs`` that is there."""
        c = audit_log.c
        query = select(c.seq, c.hash).where(c.replica == replica, c.seq.in_(list(seqs)))
        async with self.db.engine.connect() as conn:
            return {int(r.seq): r.hash for r in await conn.execute(query)}

    async def head(self, replica: str) -> tuple[int, str] | None:
        """The replica's newest record in the table (seq, hash), or its anchor's."""
        found = await self._last(audit_log, replica) or await self._last(audit_anchors, replica)
        return found

    async def _last(self, table: Table, replica: str) -> tuple[int, str] | None:
        query = (
            select(table.c.seq, table.c.hash)
            .where(table.c.replica == replica)
            .order_by(table.c.seq.desc())
            .limit(1)
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (int(row.seq), str(row.hash)) if row is not None else None

    # -- reading -----------------------------------------------------------------------

    async def query(
        self, where: Filter, limit: int = 100, cursor: str | None = None, *, newest: bool = True
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Records matching ``where``, newest first (or oldest with ``newest=False``),
        each as its JSON with ``hash``; and the cursor of the next page, if any."""
        c = audit_log.c
        key = tuple_(c.time_us, c.replica, c.seq)
        query = select(c.time_us, c.replica, c.seq, c.hash, c.record).where(*where.where())
        if cursor:
            at = tuple_(*decode_cursor(cursor))
            query = query.where(key < at if newest else key > at)
        order = [c.time_us, c.replica, c.seq]
        query = query.order_by(*[o.desc() for o in order] if newest else order).limit(limit + 1)
        async with self.db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        out = [{**json.loads(r.record), "hash": r.hash} for r in rows]
        return out, encode_cursor(rows[-1]) if more and rows else None

    async def export(self, where: Filter, page: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Every record matching ``where``, oldest first, a page at a time."""
        cursor: str | None = None
        while True:
            rows, cursor = await self.query(where, page, cursor, newest=False)
            for row in rows:
                yield row
            if cursor is None:
                return

    async def replicas(self) -> list[str]:
        query = select(audit_log.c.replica).distinct().order_by(audit_log.c.replica)
        anchored = select(audit_anchors.c.replica).distinct()
        async with self.db.engine.connect() as conn:
            found = {r.replica for r in await conn.execute(query)}
            found |= {r.replica for r in await conn.execute(anchored)}
        return sorted(found)

    async def chain(self, replica: str, page: int = 5000) -> AsyncIterator[StoredRow]:
        """A replica's rows in seq order."""
        c = audit_log.c
        after = -1
        while True:
            query = (
                select(audit_log)
                .where(c.replica == replica, c.seq > after)
                .order_by(c.seq)
                .limit(page)
            )
            async with self.db.engine.connect() as conn:
                rows = list(await conn.execute(query))
            for r in rows:
                yield StoredRow(**r._mapping)
            if len(rows) < page:
                return
            after = int(rows[-1].seq)

    async def anchor(self, replica: str) -> tuple[int, str] | None:
        """Where retention left the replica's chain: the last deleted (seq, hash)."""
        return await self._last(audit_anchors, replica)

    # -- retention ---------------------------------------------------------------------

    async def prune(self, before_us: int) -> int:
        """Delete each replica's records older than ``before_us`` (a prefix of its
        chain), leaving an anchor; how many rows went."""
        c = audit_log.c
        oldest = (
            select(c.replica, func.max(c.seq).label("seq"))
            .where(c.time_us < before_us)
            .group_by(c.replica)
        )
        removed = 0
        async with self.db.engine.begin() as conn:
            for replica, seq in list(await conn.execute(oldest)):
                found = await conn.execute(select(c.hash).where(c.replica == replica, c.seq == seq))
                anchor = {"replica": replica, "seq": seq, "hash": found.scalar_one(),
                          "pruned_at": time.time()}  # fmt: skip
                await conn.execute(
                    self._insert()(audit_anchors).values(anchor).on_conflict_do_nothing()
                )
                done = await conn.execute(
                    delete(audit_log).where(and_(c.replica == replica, c.seq <= seq))
                )
                removed += int(done.rowcount or 0)
        return removed


PG_RECIPE = """\
-- As a superuser (or the database's owner), once llmux has made its tables.
-- {app}: the role llmux serves with; {retention}: the role `llmux audit prune` uses.
CREATE ROLE {owner} NOLOGIN;
CREATE ROLE {retention} LOGIN;  -- add PASSWORD '...' unless it logs in another way
ALTER TABLE audit_log OWNER TO {owner};
ALTER TABLE audit_anchors OWNER TO {owner};
REVOKE ALL ON audit_log, audit_anchors FROM PUBLIC;
GRANT SELECT, INSERT ON audit_log, audit_anchors TO {app};
GRANT SELECT, DELETE ON audit_log TO {retention};
GRANT SELECT, INSERT ON audit_anchors TO {retention};

CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log' THEN
    IF current_user = '{retention}'
       AND OLD.time_us < (extract(epoch FROM now()) - {days} * 86400) * 1000000 THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
ALTER FUNCTION audit_append_only() OWNER TO {owner};

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""


def pg_recipe(
    app: str = "llmux",
    retention: str = "llmux_audit_retention",
    owner: str = "llmux_audit_owner",
    days: int = 90,
) -> str:
    """:data:`PG_RECIPE` for these role names and retention window (days: rows younger
    than this cannot be deleted by anyone; keep it >= ``[audit] retention_days``)."""
    for name in (app, retention, owner):
        if not name.replace("_", "").isalnum():
            raise ValueError(f"role name {name!r}: letters, digits and _ only")
    return PG_RECIPE.format(app=app, retention=retention, owner=owner, days=int(days))
