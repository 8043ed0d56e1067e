"""Usage records (the append-only ledger), per-scope limits and budgets, on SQLite or
PostgreSQL.

A usage record's id is made by the server for its operation (never the client's
request id, which a client could repeat): writing a batch again (a retry after a failed
commit) inserts only the records that are not there yet. Spend is
summed from the records; nothing updates or deletes them.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from operator import attrgetter
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from llmux.storage.database import Database
from llmux.storage.principals import users

_meta = MetaData()
records = Table(
    "usage_records",
    _meta,
    Column("id", String, primary_key=True),
    Column("request_id", Text),
    Column("created_at", Float),
    Column("day", Text),
    Column("principal", Text),
    Column("user_id", Text),
    Column("key_id", Text),
    Column("client_id", Text),
    Column("team", Text),
    Column("api", Text),
    Column("route", Text),
    Column("kind", Text),
    Column("model", Text),
    Column("served", Text),
    Column("backend", Text),
    Column("stream", Boolean),
    Column("prompt_tokens", BigInteger),
    Column("completion_tokens", BigInteger),
    Column("cached_tokens", BigInteger),
    Column("cost_micros", BigInteger),
    Column("status", Text),
    Column("http_status", Integer),
    Column("latency_ms", Float),
    Column("ttft_ms", Float),
    Column("cache", Text),
)
quotas = Table(
    "quotas",
    _meta,
    Column("scope", String, primary_key=True),
    Column("requests_per_minute", Integer),
    Column("tokens_per_minute", Integer),
    Column("concurrent_requests", Integer),
    Column("updated_at", Float),
)
budgets = Table(
    "budgets",
    _meta,
    Column("id", String, primary_key=True),
    Column("scope", Text),
    Column("period", Text),
    Column("amount_micros", BigInteger),
    Column("created_at", Float),
)

Period = Literal["day", "month", "total"]
# what a budget's scope names -> the record column that holds it
SCOPE_COLUMNS = {"key": "key_id", "user": "user_id", "client": "client_id", "team": "team"}
GROUPS = {
    "day": "day",
    "model": "model",
    "key": "key_id",
    "user": "user_id",
    "client": "client_id",
    "team": "team",
    "principal": "principal",
    "backend": "backend",
    "cache": "cache",
}


@dataclass(frozen=True, slots=True)
class UsageRecord:
    id: str  # made by the server for this operation: budgets settle by it, once
    request_id: str  # the request's (X-Request-Id), which a client may choose
    created_at: float
    day: str  # YYYY-MM-DD, UTC
    principal: str  # the caller's scope: key:ID, client:ID, user:ID, token:SUB, addr:IP
    user_id: str | None
    key_id: str | None
    client_id: str | None
    team: str | None
    api: str
    route: str
    kind: str  # chat, embed
    model: str  # the name the gateway resolved
    served: str  # the model that answered, as the backend named it
    backend: str  # local, pool, relay
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int
    status: str  # ok, cancelled, error:STATUS:CODE
    http_status: int
    latency_ms: float
    ttft_ms: float | None
    cache: str | None = None  # l1, l2: the response cache answered


COLUMNS = tuple(column.name for column in records.columns)  # the table's order
_values = attrgetter(*COLUMNS)
# SQLite allows 32,766 parameters in a statement (999 before 3.32)
_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999
ROWS_PER_INSERT = max(1, _PARAMETERS // len(COLUMNS) // 2)


def _split_values(sql: str) -> tuple[str, str, str]:
    """``INSERT ... VALUES (?, ...) ON CONFLICT ...`` as its head, its one row of
    placeholders and its tail."""
    start = sql.index(" VALUES (") + len(" VALUES ")
    end = sql.index(")", start) + 1
    return sql[:start], sql[start:end], sql[end:]


@dataclass(frozen=True, slots=True)
class QuotaRow:
    scope: str  # key:ID, user:ID, client:ID, model:NAME
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BudgetRow:
    id: str
    scope: str  # key:ID, user:ID, client:ID, team:NAME
    period: Period
    amount_micros: int
    created_at: float = 0.0

    @property
    def column(self) -> str:
        return SCOPE_COLUMNS[self.scope.partition(":")[0]]

    @property
    def value(self) -> str:
        return self.scope.partition(":")[2]


class SqlUsage:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._add_sql: dict[int, str] = {}

    def _insert(self) -> Any:
        return (postgresql if self.db.dialect == "postgresql" else sqlite).insert

    # -- the ledger --------------------------------------------------------------------

    async def add(self, batch: list[UsageRecord]) -> int:
        """Write the records in one transaction; how many were new (where the driver
        says; else all of them). On SQLite a statement inserts up to :data:`ROWS_PER_INSERT`
        rows at once (one step of the engine, not one per row); PostgreSQL's driver
        pipelines an executemany by itself."""
        if not batch:
            return 0
        rows = [_values(r) for r in batch]  # tuples in column order, straight to the driver
        async with self.db.engine.begin() as conn:
            if self.db.dialect != "sqlite":
                done = await conn.exec_driver_sql(self._statement(1), rows)
                n = done.rowcount
                return n if n is not None and n >= 0 else len(batch)
            new = 0
            for at in range(0, len(rows), ROWS_PER_INSERT):
                part = rows[at : at + ROWS_PER_INSERT]
                flat = tuple(value for row in part for value in row)
                done = await conn.exec_driver_sql(self._statement(len(part)), flat)
                new += (
                    done.rowcount if done.rowcount is not None and done.rowcount >= 0 else len(part)
                )
            return new

    def _statement(self, rows: int) -> str:
        """The insert of ``rows`` records in the driver's own dialect (made once per count)."""
        found = self._add_sql.get(rows)
        if found is None:
            statement = self._insert()(records).on_conflict_do_nothing(index_elements=["id"])
            one = str(statement.compile(dialect=self.db.engine.dialect))
            if rows > 1:
                head, values, tail = _split_values(one)
                one = head + ", ".join([values] * rows) + tail
            if len(self._add_sql) > 64:
                self._add_sql.clear()
            found = self._add_sql[rows] = one
        return found

    async def spent(self, budget: BudgetRow, start: float, end: float) -> int:
        """What the records charged to ``budget``'s scope in [start, end)."""
        column = records.c[budget.column]
        query = select(func.coalesce(func.sum(records.c.cost_micros), 0)).where(
            column == budget.value, records.c.created_at >= start, records.c.created_at < end
        )
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def totals(
        self,
        group_by: list[str],
        start: float,
        end: float,
        where: dict[str, str] | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Sums per group over [start, end): requests, tokens, cost; ``where`` narrows
        to one column's value (a user's own usage)."""
        columns = [records.c[GROUPS[g]].label(g) for g in group_by]
        query = select(
            *columns,
            func.count().label("requests"),
            func.coalesce(func.sum(records.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(records.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(records.c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(records.c.cost_micros), 0).label("cost_micros"),
        ).where(records.c.created_at >= start, records.c.created_at < end)
        for name, value in (where or {}).items():
            query = query.where(records.c[name] == value)
        if columns:
            query = query.group_by(*columns).order_by(*columns)
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query.limit(limit))
            return [dict(r._mapping) for r in rows]

    # -- per-scope limits --------------------------------------------------------------

    async def quotas(self) -> list[QuotaRow]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(quotas).order_by(quotas.c.scope))
            return [
                QuotaRow(r.scope, r.requests_per_minute, r.tokens_per_minute, r.concurrent_requests)
                for r in rows
            ]

    async def put_quota(self, row: QuotaRow) -> None:
        values = {**row.public(), "updated_at": time.time()}
        statement = self._insert()(quotas).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["scope"], set_={k: v for k, v in values.items() if k != "scope"}
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(statement)

    async def delete_quota(self, scope: str) -> bool:
        async with self.db.engine.begin() as conn:
            done = await conn.execute(delete(quotas).where(quotas.c.scope == scope))
        return bool(done.rowcount)

    # -- budgets -----------------------------------------------------------------------

    async def budgets(self) -> list[BudgetRow]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(budgets).order_by(budgets.c.scope, budgets.c.period))
            return [
                BudgetRow(r.id, r.scope, r.period, int(r.amount_micros), r.created_at) for r in rows
            ]

    async def put_budget(self, row: BudgetRow) -> BudgetRow:
        """Create the scope's budget for the period, or change its amount."""
        statement = (
            self._insert()(budgets)
            .values(asdict(row))
            .on_conflict_do_update(
                index_elements=["scope", "period"], set_={"amount_micros": row.amount_micros}
            )
            .returning(budgets.c.id, budgets.c.created_at)
        )
        async with self.db.engine.begin() as conn:
            found = (await conn.execute(statement)).one()
        return BudgetRow(found.id, row.scope, row.period, row.amount_micros, found.created_at)

    async def delete_budget(self, budget_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            done = await conn.execute(delete(budgets).where(budgets.c.id == budget_id))
        return bool(done.rowcount)

    async def teams(self) -> dict[str, str]:
        """Each user's team, for the users that have one."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(users.c.id, users.c.team).where(users.c.team.is_not(None))
            )
            return {r.id: r.team for r in rows if r.team}
