"""The Batch API's files: one row per upload (its owner, purpose, name, size, line count
and the SHA-256 of its bytes, which ``batch/files.py`` keeps on disk), on SQLite or
PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    func,
    select,
    tuple_,
)

from llmux.storage.database import Database

_meta = MetaData()
files = Table(
    "files",
    _meta,
    Column("id", Text, primary_key=True),
    Column("owner", Text),
    Column("purpose", Text),
    Column("filename", Text),
    Column("bytes", BigInteger),
    Column("sha256", Text),
    Column("lines", Integer),
    Column("created_at", BigInteger),
)


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    owner: str | None
    purpose: str
    filename: str
    bytes: int
    sha256: str
    lines: int
    created_at: int  # unix seconds


class SqlFiles:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, row: FileRow) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(files.insert().values(**_values(row)))

    async def get(self, file_id: str) -> FileRow | None:
        async with self.db.engine.connect() as conn:
            found = (await conn.execute(select(files).where(files.c.id == file_id))).first()
        return FileRow(**found._mapping) if found is not None else None

    async def list(
        self, owner: str | None, *, purpose: str | None, after: str | None, limit: int, newest: bool
    ) -> list[FileRow]:
        """``owner``'s files (every file with None), newest first or oldest first,
        continuing after the file ``after``."""
        query = select(files)
        if owner is not None:
            query = query.where(files.c.owner == owner)
        if purpose:
            query = query.where(files.c.purpose == purpose)
        key = tuple_(files.c.created_at, files.c.id)
        if after:
            mark = await self.get(after)
            if mark is not None:
                at = tuple_(mark.created_at, mark.id)
                query = query.where(key < at if newest else key > at)
        order = (files.c.created_at.desc(), files.c.id.desc()) if newest else (files.c.created_at, files.c.id)  # fmt: skip
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(*order).limit(limit))).all()
        return [FileRow(**r._mapping) for r in rows]

    async def remove(self, file_id: str) -> int:
        """Delete a file's row; returns how many rows still hold its bytes."""
        async with self.db.engine.begin() as conn:
            found = (await conn.execute(select(files.c.sha256).where(files.c.id == file_id))).first()  # fmt: skip
            if found is None:
                return 0
            await conn.execute(delete(files).where(files.c.id == file_id))
            count = select(func.count()).select_from(files).where(files.c.sha256 == found[0])
            return int((await conn.execute(count)).scalar_one())


def _values(row: FileRow) -> dict[str, object]:
    return {c.name: getattr(row, c.name) for c in files.columns}
