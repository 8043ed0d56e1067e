"""Downloading one blob: ranged parts in parallel, resumable, verified before use.

Bytes land in ``blobs/sha256-<hex>-partial`` with a ``.json`` beside it recording how
much of each part has arrived, so a cancelled or failed download continues where it
stopped (``Range: bytes=<next>-<end>``). A broken connection is retried a few times
per part. Only :func:`commit` moves a file to its real name, after
:func:`verify` has checked its sha256; nothing unverified is ever a blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import httpx

from llmux.errors import LlmuxError
from llmux.models.registry import RegistryError
from llmux.models.store import blob_name

log = logging.getLogger(__name__)

OpenRange = Callable[[int, int], Awaitable[httpx.Response]]  # (start, end incl.) -> streaming
RETRIES = 5
MAX_PART_BYTES = 1000 * 1024 * 1024
SAVE_EVERY_S = 0.5


class DigestMismatch(RegistryError):
    """The bytes received do not hash to the digest the manifest names."""


@dataclass(slots=True)
class Part:
    offset: int
    size: int
    completed: int = 0


def plan_parts(size: int, min_part: int, max_parts: int) -> list[Part]:
    """Split ``size`` bytes into at most ``max_parts`` parts of at least ``min_part``."""
    part = max(min_part, -(-size // max_parts))
    part = min(part, max(MAX_PART_BYTES, -(-size // max_parts)))
    parts = [Part(offset, min(part, size - offset)) for offset in range(0, size, part)]
    return parts or [Part(0, 0)]


def partial_path(blobs: Path, digest: str) -> Path:
    return blobs / f"{blob_name(digest)}-partial"


def _state_path(data: Path) -> Path:
    return data.with_name(data.name + ".json")


class BlobDownload:
    """One blob's download; :attr:`completed` counts the bytes on disk so far."""

    def __init__(
        self, blobs: Path, digest: str, size: int, *, min_part: int, max_parts: int
    ) -> None:
        self.digest = digest
        self.size = size
        self.data = partial_path(blobs, digest)
        self.state = _state_path(self.data)
        self.parts = self._load() or plan_parts(size, min_part, max_parts)
        self._saved_at = 0.0

    @property
    def completed(self) -> int:
        return sum(p.completed for p in self.parts)

    @property
    def resumed(self) -> bool:
        return self.completed > 0

    def _load(self) -> list[Part] | None:
        try:
            state = json.loads(self.state.read_text())
            if state.get("size") != self.size or self.data.stat().st_size != self.size:
                return None
            return [Part(**p) for p in state["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self) -> None:
        body = {"digest": self.digest, "size": self.size, "parts": [asdict(p) for p in self.parts]}
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.state)
        self._saved_at = time.monotonic()

    async def run(self, open_range: OpenRange, on_progress: Callable[[int], None]) -> None:
        if self.completed >= self.size:
            if not self.data.exists():  # an empty blob
                self.data.touch()
            on_progress(self.completed)
            return
        fd = os.open(self.data, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
            self._save()
            async with asyncio.TaskGroup() as group:
                for part in self.parts:
                    if part.completed < part.size:
                        group.create_task(self._part(fd, part, open_range, on_progress))
        except BaseExceptionGroup as group_exc:
            raise _first(group_exc) from None
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                self._save()

    async def _part(
        self, fd: int, part: Part, open_range: OpenRange, on_progress: Callable[[int], None]
    ) -> None:
        failures = 0
        while part.completed < part.size:
            before = part.completed
            try:
                await self._fetch(fd, part, open_range, on_progress)
            except (httpx.HTTPError, RegistryError) as exc:
                if isinstance(exc, DigestMismatch):
                    raise
                failures = failures + 1 if part.completed == before else 1
                if failures > RETRIES:
                    raise RegistryError(
                        f"download of {self.digest[7:19]} kept failing ({exc}); "
                        "pull again to resume where it stopped"
                    ) from exc
                log.info("blob %s part at %d: %s; retrying", self.digest[7:19], part.offset, exc)
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))

    async def _fetch(
        self, fd: int, part: Part, open_range: OpenRange, on_progress: Callable[[int], None]
    ) -> None:
        start = part.offset + part.completed
        end = part.offset + part.size - 1
        response = await open_range(start, end)
        try:
            if response.status_code not in (200, 206):
                raise RegistryError(f"blob {self.digest[7:19]}: answered {response.status_code}")
            skip = start if response.status_code == 200 else 0  # the server ignored Range
            async for chunk in response.aiter_bytes(1 << 16):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                chunk = chunk[: part.size - part.completed]
                if not chunk:
                    if part.completed >= part.size:
                        break
                    continue
                os.pwrite(fd, chunk, part.offset + part.completed)
                part.completed += len(chunk)
                on_progress(self.completed)
                if time.monotonic() - self._saved_at > SAVE_EVERY_S:
                    self._save()
        finally:
            await response.aclose()
        if part.completed < part.size:
            raise RegistryError(f"blob {self.digest[7:19]}: connection closed early")


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if isinstance(exc, LlmuxError):
            return exc
    return group.exceptions[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


async def verify(blobs: Path, digest: str) -> None:
    """Hash the downloaded file (off the event loop); a mismatch deletes it."""
    data = partial_path(blobs, digest)
    actual = await anyio.to_thread.run_sync(_sha256, data)
    if actual != digest:
        discard(blobs, digest)
        raise DigestMismatch(
            f"digest mismatch for {digest}: the registry sent bytes hashing to {actual}; "
            "nothing was installed, the file was discarded; pull again, and if it "
            "persists the registry or a proxy is serving corrupt or tampered data"
        )


def commit(blobs: Path, digest: str) -> None:
    data = partial_path(blobs, digest)
    final = blobs / blob_name(digest)
    if final.exists():
        data.unlink(missing_ok=True)
    else:
        os.replace(data, final)
    _state_path(data).unlink(missing_ok=True)


def discard(blobs: Path, digest: str) -> None:
    data = partial_path(blobs, digest)
    data.unlink(missing_ok=True)
    _state_path(data).unlink(missing_ok=True)
