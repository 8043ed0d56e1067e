"""Replicas that start together on an empty PostgreSQL database (issue 19 item 4): the
schema is migrated once, under the advisory lock, and every one of them comes up.
First eight ``Database.open()`` at once in one process (the tightest race), then two
``llmux serve`` processes started at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from llmux.storage.database import Database, database_url
from llmux.storage.migrations import MIGRATIONS
from tests.conftest import Server, fresh_pg_database, start_server


@pytest.fixture
def empty_pg() -> Iterator[str]:
    yield from fresh_pg_database("llmux_race")


async def versions(url: str, home: Path) -> list[int]:
    db = Database(database_url(url, home))
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(text("SELECT version FROM schema_migrations"))
            return sorted(row[0] for row in rows)
    finally:
        await db.aclose()


@pytest.mark.anyio
async def test_eight_opens_at_once_migrate_once(empty_pg: str, tmp_path: Path) -> None:
    databases = [Database(database_url(empty_pg, tmp_path)) for _ in range(8)]
    try:
        results = await asyncio.gather(*(db.open() for db in databases), return_exceptions=True)
    finally:
        for db in databases:
            await db.aclose()
    assert [r for r in results if r is not None] == []
    assert await versions(empty_pg, tmp_path) == list(range(1, len(MIGRATIONS) + 1))


def test_two_replicas_started_together_migrate_once(
    empty_pg: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"LLMUX_STORAGE__DATABASE_URL": empty_pg, "LLMUX_STORE__BUNDLED_MODEL": ""}
    homes = [tmp_path_factory.mktemp(f"race-{n}") for n in range(2)]
    with ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start_server, home, extra_env=env) for home in homes]
        servers: list[Server] = []
        errors = []
        for future in starting:
            try:
                servers.append(future.result())
            except RuntimeError as exc:  # it exited, or did not get ready: its log is in it
                errors.append(str(exc))
    try:
        assert errors == []
        for srv in servers:
            with srv.client() as http:
                assert http.get("/readyz").status_code == 200
        assert asyncio.run(versions(empty_pg, homes[0])) == list(range(1, len(MIGRATIONS) + 1))
    finally:
        codes = [srv.stop() for srv in servers]
    assert codes == [0, 0]
    for srv in servers:
        log = srv.log.read_text()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
