"""Fixtures for the audit trail's tests: its repository on a SQLite file and on a fresh
PostgreSQL database (the real server at 127.0.0.1:5432), and records to put in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from llmux.audit.record import GENESIS, AuditRecord, iso_us, sealed
from llmux.storage.audit import SqlAudit
from llmux.storage.database import Database
from tests.storage.conftest import db_url  # noqa: F401 - SQLite and PostgreSQL, as the storage tests


@pytest.fixture
async def repo(db_url: URL) -> AsyncIterator[SqlAudit]:  # noqa: F811 - the fixture, by name
    database = Database(db_url)
    await database.open()
    async with database.engine.begin() as conn:  # PostgreSQL's database is the session's
        await conn.exec_driver_sql("DELETE FROM audit_log")
        await conn.exec_driver_sql("DELETE FROM audit_anchors")
    yield SqlAudit(database)
    await database.aclose()


def chain(
    replica: str, n: int, start_us: int, step_us: int = 1000, **fields: Any
) -> list[AuditRecord]:
    """``n`` linked records of one replica, ``step_us`` apart."""
    return linked(replica, [start_us + i * step_us for i in range(1, n + 1)], **fields)


def linked(replica: str, times_us: list[int], **fields: Any) -> list[AuditRecord]:
    """Linked records of one replica, made at ``times_us``."""
    out: list[AuditRecord] = []
    prev = GENESIS
    for i, at in enumerate(times_us, start=1):
        values: dict[str, Any] = {
            "kind": "model", "request_id": f"{replica}-req-{i}", "route": "/api/chat",
            "api": "ollama", "operation": "chat", "model": "m" if i % 2 else "other",
            "served": "m:latest", "status": 200 if i % 5 else 429,
            "principal_kind": "key", "principal_id": f"k{i % 3}", "principal_name": f"key{i % 3}",
            **fields,
        }  # fmt: skip
        record = sealed(AuditRecord(replica, i, prev, iso_us(at), **values))
        out.append(record)
        prev = record.hash
    return out
