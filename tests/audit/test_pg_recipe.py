"""The PostgreSQL recipe of docs/observability.md on the real local PostgreSQL: llmux's
own role may insert and read audit rows but not change, delete or truncate them (nor
switch the trigger off); not even a superuser gets past the trigger; the retention role
deletes only records older than the recipe's window, leaving an anchor, after which
the chain still verifies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from llmux.audit.verify import verify
from llmux.storage.audit import Filter, SqlAudit, pg_recipe
from llmux.storage.database import Database, database_url
from tests.audit.conftest import linked
from tests.conftest import _admin, fresh_pg_database

pytestmark = pytest.mark.anyio
DAY_US = 86_400_000_000
DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


@pytest.fixture
def roles() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    names = {"app": f"llmux_app_{tag}", "retention": f"llmux_ret_{tag}",
             "owner": f"llmux_own_{tag}"}  # fmt: skip
    asyncio.run(_admin(f"CREATE ROLE {names['app']} LOGIN"))
    yield names
    for name in names.values():  # after the database (which holds what they own) is gone
        asyncio.run(_admin(f"DROP ROLE IF EXISTS {name}"))


@pytest.fixture
def pg(roles: dict[str, str]) -> Iterator[str]:
    yield from fresh_pg_database("llmux_audit_recipe")


def as_role(url: str, role: str) -> Database:
    parsed = make_url(url).set(username=role)
    return Database(database_url(parsed.render_as_string(hide_password=False), Path(".")))


async def psql(url: str, script: str) -> None:
    """A script of several statements, as psql would run it (the simple protocol)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"), timeout=5)
    try:
        await conn.execute(script)
    finally:
        await conn.close()


async def run_sql(db: Database, statement: str) -> None:
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(statement)


def test_the_docs_carry_the_recipe() -> None:
    assert pg_recipe() in DOC.read_text(), "docs/observability.md shows `llmux audit recipe`"


async def test_the_recipe_makes_the_table_append_only(pg: str, roles: dict[str, str]) -> None:
    app, retention = roles["app"], roles["retention"]
    admin = as_role(pg, "postgres")
    await run_sql(admin, f"GRANT ALL ON SCHEMA public TO {app}")
    served = as_role(pg, app)
    await served.open()  # llmux migrates as its own role, and so owns its tables
    now = time.time_ns() // 1000
    times = [now - (100 - i) * DAY_US for i in range(5)]  # 100..96 days old
    times += [now - (40 - i) * DAY_US for i in range(15)]  # 40..26 days old
    records = linked("r1", times)
    repo = SqlAudit(served)
    await repo.add(records[:10])
    await psql(pg, pg_recipe(app, retention, roles["owner"], days=90))  # as a superuser
    assert await repo.add(records[10:]) == 10, "llmux still inserts"
    assert (await verify(repo)).ok, "and reads"
    for statement in (
        "UPDATE audit_log SET status = 200",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DROP TRIGGER audit_log_append_only ON audit_log",
        "UPDATE audit_anchors SET seq = 0",
    ):
        with pytest.raises(DBAPIError) as refused:
            await run_sql(served, statement)
        assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)
    for statement in ("UPDATE audit_log SET status = 200", "DELETE FROM audit_log",
                      "TRUNCATE audit_log"):  # fmt: skip
        with pytest.raises(DBAPIError) as refused:
            await run_sql(admin, statement)  # even a superuser meets the trigger
        assert "append-only" in str(refused.value)
    with pytest.raises(DBAPIError):  # llmux's own retention: the recipe's path is prune's
        await repo.prune(now)
    pruner = as_role(pg, retention)
    with pytest.raises(DBAPIError) as refused:  # rows younger than the recipe's 90 days
        await SqlAudit(pruner).prune(now - 30 * DAY_US)
    assert "append-only" in str(refused.value)
    assert await SqlAudit(pruner).prune(now - 91 * DAY_US) == 5, "what is older goes"
    report = await verify(repo)
    assert report.ok, report.problems
    assert (report.replicas[0].anchor, report.replicas[0].first) == (5, 6)
    rows, _ = await repo.query(Filter(), 100)
    assert len(rows) == 15
    for db in (served, admin, pruner):
        await db.aclose()
