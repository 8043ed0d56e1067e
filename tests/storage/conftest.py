"""Databases for storage tests: a SQLite file and a fresh PostgreSQL database
(``pg_url`` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from llmux.storage.database import Database, database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    if request.param == "sqlite":
        return database_url(None, tmp_path)
    return database_url(request.getfixturevalue("pg_url"), tmp_path)


@pytest.fixture
async def db(db_url: URL) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.open()
    if database.dialect == "postgresql":  # each test starts from empty tables
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql("TRUNCATE messages, conversations")
    yield database
    await database.aclose()
