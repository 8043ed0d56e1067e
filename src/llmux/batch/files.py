"""Files for the Batch API (``/v1/files``), request-free.

An upload's bytes go to ``<home>/files/<sha256>``, content-addressed: two uploads of the
same bytes share one copy, which goes when the last file that names it is deleted. The
row (``storage/files.py``) says who owns it, its purpose, name, size and line count. A
``batch`` file holds one request per non-blank line (JSON Lines), at most ``[batch]
max_lines`` lines and ``[batch] max_file_bytes`` bytes; the lines themselves are checked
by the batch that runs them. Every caller sees only its own files (another's
is 404), as with conversations. Ids begin with the time in milliseconds, so they sort as
the files were made (lists are ordered by ``created_at``, then id).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmux.core.context import RequestContext, new_request_id
from llmux.errors import InvalidRequest, NotFound, PayloadTooLarge
from llmux.history import owner_of
from llmux.storage.blobs import SqlBlobs
from llmux.storage.files import FileRow, SqlFiles

PURPOSES = ("batch", "batch_output")  # a client uploads "batch"; llmux writes the outputs
UPLOADABLE = ("batch",)
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 200 * 1024 * 1024
    max_lines: int = 50_000


def file_object(row: FileRow) -> dict[str, Any]:
    """A file as the OpenAI API shows it."""
    return {
        "id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
        "expires_at": None, "filename": row.filename, "purpose": row.purpose,
        "status": "processed", "status_details": None,
    }  # fmt: skip


class JsonLines:
    """Counts the lines of a ``batch`` file as its bytes pass. What the lines hold is
    checked by the batch made from the file (``batch/lines.py``): a line that is not a
    request goes to that batch's error file, naming its line, and the others run."""

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self.lines = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        *whole, self._tail = data.split(b"\n")
        for line in whole:
            self._line(line)

    def close(self) -> None:
        if self._tail:
            self._line(self._tail)
            self._tail = b""
        if not self.lines:
            raise InvalidRequest("the file has no lines; a batch file holds one JSON request per line", param="file")  # fmt: skip

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        self.lines += 1
        if self.lines > self.max_lines:
            raise InvalidRequest(
                f"the file has more than {self.max_lines} lines, the most a batch file may have;"
                " split it into several batches", param="file",
            )  # fmt: skip


class Files:
    """The files' bytes on disk and their rows in the database."""

    def __init__(
        self, root: Path, repo: SqlFiles, limits: Limits, shared: SqlBlobs | None = None
    ) -> None:
        """``shared``: the bytes are kept in the database too, and ``root`` is this
        replica's cache of them (replicas that share a database but no disk)."""
        self.root = root
        self.repo = repo
        self.limits = limits
        self.shared = shared

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    async def local(self, sha256: str) -> Path:
        """Where the bytes are on this replica's disk, fetched from the database first
        when they are only there."""
        path = self.path(sha256)
        if path.exists() or self.shared is None:
            return path
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".fetch-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for part in self.shared.parts(sha256):
                    digest.update(part)
                    await asyncio.to_thread(out.write, part)
            if digest.hexdigest() == sha256:
                os.replace(temp, path)
        finally:
            Path(temp).unlink(missing_ok=True)
        return path

    async def _share(self, sha256: str) -> None:
        if self.shared is not None:
            with self.path(sha256).open("rb") as f:
                await self.shared.put(sha256, f)

    async def upload(self, ctx: RequestContext, source: IO[bytes], filename: str, purpose: str) -> FileRow:  # fmt: skip
        if purpose not in UPLOADABLE:
            raise InvalidRequest(
                f"purpose {purpose!r} is not one llmux accepts for uploads; use 'batch'",
                param="purpose",
            )
        name = os.path.basename(filename.replace("\\", "/"))[:255] or "upload.jsonl"
        sha256, size, lines = await asyncio.to_thread(self._store, source)
        await self._share(sha256)
        row = FileRow(
            id=f"file-{new_request_id()}", owner=owner_of(ctx.principal), purpose=purpose,
            filename=name, bytes=size, sha256=sha256, lines=lines, created_at=int(time.time()),
        )  # fmt: skip
        await self.repo.add(row)
        return row

    def _store(self, source: IO[bytes]) -> tuple[str, int, int]:
        """Copy ``source`` under a temporary name while hashing and checking it, then
        move it to its SHA-256 (an identical copy there already is kept)."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest, size, check = hashlib.sha256(), 0, JsonLines(self.limits.max_lines)
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(source):
                    size += len(chunk)
                    if size > self.limits.max_bytes:
                        raise PayloadTooLarge(f"the file is larger than {self.limits.max_bytes} bytes, the most a batch file may be")  # fmt: skip
                    digest.update(chunk)
                    check.feed(chunk)
                    out.write(chunk)
            check.close()
            os.replace(temp, self.path(digest.hexdigest()))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size, check.lines

    async def write(
        self, owner: str | None, filename: str, purpose: str, lines: AsyncIterator[str]
    ) -> FileRow:
        """A file llmux makes (a batch's output or errors) from its lines, JSON Lines."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest, size, count = hashlib.sha256(), 0, 0
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".output-")
        try:
            with os.fdopen(fd, "wb") as out:
                page: list[str] = []
                async for line in lines:
                    page.append(line)
                    count += 1
                    if len(page) == 1000:
                        size += await asyncio.to_thread(_append, out, digest, page)
                        page = []
                size += await asyncio.to_thread(_append, out, digest, page)
            os.replace(temp, self.path(digest.hexdigest()))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        await self._share(digest.hexdigest())
        row = FileRow(
            id=f"file-{new_request_id()}", owner=owner, purpose=purpose, filename=filename,
            bytes=size, sha256=digest.hexdigest(), lines=count, created_at=int(time.time()),
        )  # fmt: skip
        await self.repo.add(row)
        return row

    async def stored(self, file_id: str) -> tuple[FileRow, Path] | None:
        """A file and where its bytes are, for llmux's own use (no owner check)."""
        row = await self.repo.get(file_id)
        return (row, await self.local(row.sha256)) if row is not None else None

    async def get(self, ctx: RequestContext, file_id: str) -> FileRow:
        row = await self.repo.get(file_id)
        if row is None or not _visible(ctx, row):
            raise NotFound(f"no file with id {file_id!r}", param="file_id")
        return row

    async def list(
        self, ctx: RequestContext, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRow], bool]:
        if not 1 <= limit <= 10_000:
            raise InvalidRequest("limit is 1 to 10000", param="limit")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order is 'asc' or 'desc'", param="order")
        rows = await self.repo.list(
            owner_of(ctx.principal), purpose=purpose, after=after, limit=limit + 1, newest=order == "desc"
        )  # fmt: skip
        return rows[:limit], len(rows) > limit

    async def delete(self, ctx: RequestContext, file_id: str) -> None:
        row = await self.get(ctx, file_id)
        if await self.repo.remove(row.id) == 0:
            self.path(row.sha256).unlink(missing_ok=True)
            if self.shared is not None:
                await self.shared.drop(row.sha256)

    async def content(self, ctx: RequestContext, file_id: str) -> tuple[FileRow, Path]:
        row = await self.get(ctx, file_id)
        path = await self.local(row.sha256)
        if not path.exists():
            raise NotFound(f"the bytes of file {file_id!r} are gone from this server's disk", param="file_id")  # fmt: skip
        return row, path


def _visible(ctx: RequestContext, row: FileRow) -> bool:
    return owner_of(ctx.principal) in (None, row.owner)


def _append(out: IO[bytes], digest: Any, lines: list[str]) -> int:
    data = "".join(line + "\n" for line in lines).encode()
    digest.update(data)
    out.write(data)
    return len(data)


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk
