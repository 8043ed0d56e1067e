"""``llmux db migrate``: the schema brought up to this release, on SQLite and on
PostgreSQL, and one line when the database cannot be opened."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmux.storage.migrations import MIGRATIONS
from tests.conftest import fresh_pg_database


@pytest.fixture()
def pg() -> Iterator[str]:
    yield from fresh_pg_database("llmux_migrate")


def migrate(home: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env["LLMUX_HOME"] = str(home)
    if url:
        env["LLMUX_STORAGE__DATABASE_URL"] = url
    cmd = [sys.executable, "-m", "llmux", "db", "migrate"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_migrate_sqlite(tmp_path: Path) -> None:
    done = migrate(tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"schema version {len(MIGRATIONS)}" in done.stdout
    with sqlite3.connect(tmp_path / "llmux.db") as db:
        versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]  # fmt: skip
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert migrate(tmp_path).returncode == 0  # again: nothing to do


def test_migrate_postgresql_and_a_database_that_is_not_there(tmp_path: Path, pg: str) -> None:
    done = migrate(tmp_path, pg)
    assert done.returncode == 0, done.stderr
    assert f"schema version {len(MIGRATIONS)}" in done.stdout
    missing = migrate(tmp_path, pg.rsplit("/", 1)[0] + "/llmux_no_such_db")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
