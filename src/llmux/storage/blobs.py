"""File bytes in the database (``file_blobs``), in parts of 1 MiB keyed by their SHA-256,
so replicas that share a database but no disk all read a file uploaded to any one of
them. ``batch/files.py`` keeps a copy on the local disk as a cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import IO

from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, Text, delete, select

from llmux.storage.database import Database

PART = 1 << 20
_meta = MetaData()
blobs = Table(
    "file_blobs",
    _meta,
    Column("sha256", Text, primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("data", LargeBinary),
)


class SqlBlobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def has(self, sha256: str) -> bool:
        async with self.db.engine.connect() as conn:
            query = select(blobs.c.part).where(blobs.c.sha256 == sha256).limit(1)
            return (await conn.execute(query)).first() is not None

    async def put(self, sha256: str, source: IO[bytes]) -> None:
        """Store the bytes of ``source`` (read from its start) unless they are here."""
        if await self.has(sha256):
            return
        await asyncio.to_thread(source.seek, 0)
        part = 0
        async with self.db.engine.begin() as conn:  # all parts or none
            while data := await asyncio.to_thread(source.read, PART):
                await conn.execute(blobs.insert().values(sha256=sha256, part=part, data=data))
                part += 1

    async def parts(self, sha256: str) -> AsyncIterator[bytes]:
        """The bytes, a part at a time; nothing when they are not stored."""
        part = 0
        while True:
            async with self.db.engine.connect() as conn:
                query = select(blobs.c.data).where(blobs.c.sha256 == sha256, blobs.c.part == part)
                found = (await conn.execute(query)).first()
            if found is None:
                return
            yield bytes(found[0])
            part += 1

    async def drop(self, sha256: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(blobs).where(blobs.c.sha256 == sha256))
