"""``client.files`` and ``client.batches`` of :class:`~llmux.AsyncClient`: the twin of
``batch_sync.py`` (the same calls, answers and waits, awaited)."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from llmux.client import batch_calls as bc
from llmux.client import types as t
from llmux.client.batch_sync import part_path
from llmux.client.errors import raise_for_status, transport_error

if TYPE_CHECKING:
    from llmux.client.aio import AsyncClient

# a plain function, or a coroutine function (awaited before the next poll)
AsyncProgress = Callable[[t.Batch], object]


class AsyncFiles:
    """``client.files``: upload, list, show, download and delete the Batch API's files."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, file: bc.FileSource, *, purpose: str = "batch", filename: str | None = None
    ) -> t.FileObject:
        """Upload a JSON Lines file: a path, the bytes, or an open binary file."""
        name = bc.upload_name(file, filename)
        if isinstance(file, str | os.PathLike):
            with open(os.fspath(file), "rb") as f:
                return await self._client._one(bc.file_upload(f, name, purpose))
        return await self._client._one(bc.file_upload(file, name, purpose))

    async def list(
        self,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        order: bc.Order | None = None,
    ) -> t.FileList:
        """One page of the caller's files (newest first by default)."""
        return await self._client._one(bc.file_list(purpose, after, limit, order))

    async def iterate(
        self, *, purpose: str | None = None, order: bc.Order | None = None, page_size: int = 100
    ) -> AsyncIterator[t.FileObject]:
        """Every file, page after page."""
        after: str | None = None
        while True:
            page = await self.list(purpose=purpose, after=after, limit=page_size, order=order)
            for item in page.data:
                yield item
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    async def get(self, id: str) -> t.FileObject:
        return await self._client._one(bc.file_get(id))

    async def delete(self, id: str) -> t.FileDeleted:
        return await self._client._one(bc.file_delete(id))

    async def content(self, id: str) -> bytes:
        """The file's bytes, read whole (``download`` writes a large one to disk)."""
        response = await self._client._open(bc.file_content(id))
        try:
            await response.aread()
        except httpx.TransportError as exc:
            raise transport_error(exc, self._client.base_url) from exc
        finally:
            await response.aclose()
        raise_for_status(response)
        return response.content

    async def download(self, id: str, path: str | os.PathLike[str]) -> int:
        """Stream the file's bytes to ``path``; returns how many were written. The file
        appears only when complete (written beside it first, then renamed)."""
        dest = Path(path)
        part = part_path(dest)
        response = await self._client._open(bc.file_content(id))
        try:
            if response.status_code >= 400:
                await response.aread()
                raise_for_status(response)
            written = 0
            with part.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    written += len(chunk)
            part.replace(dest)
            return written
        except httpx.TransportError as exc:
            raise transport_error(exc, self._client.base_url) from exc
        finally:
            await response.aclose()
            part.unlink(missing_ok=True)


class AsyncBatches:
    """``client.batches``: create, show, list, cancel and wait for batches."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        input_file_id: str,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> t.Batch:
        """Run the requests of an uploaded file (``files.create``) at low priority."""
        call = bc.batch_create(input_file_id, endpoint, completion_window, metadata)
        return await self._client._one(call)

    async def get(self, id: str) -> t.Batch:
        return await self._client._one(bc.batch_get(id))

    async def list(self, *, after: str | None = None, limit: int | None = None) -> t.BatchList:
        """One page of the caller's batches, newest first (``limit`` 1 to 100, default 20)."""
        return await self._client._one(bc.batch_list(after, limit))

    async def iterate(self, *, page_size: int = 100) -> AsyncIterator[t.Batch]:
        """Every batch, newest first, page after page."""
        after: str | None = None
        while True:
            page = await self.list(after=after, limit=page_size)
            for item in page.data:
                yield item
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    async def cancel(self, id: str) -> t.Batch:
        """Ask a batch to stop: it is ``cancelling``, then ``cancelled``."""
        return await self._client._one(bc.batch_cancel(id))

    async def wait(
        self,
        id: str,
        *,
        poll: float = bc.DEFAULT_POLL_S,
        timeout: float | None = None,
        on_progress: AsyncProgress | None = None,
    ) -> t.Batch:
        """Poll every ``poll`` seconds until the batch is completed, failed, expired or
        cancelled, and return it; ``on_progress(batch)`` (a function or a coroutine
        function) sees every poll. Raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self.get(id)
            if on_progress is not None:
                shown = on_progress(batch)
                if inspect.isawaitable(shown):
                    await shown
            if batch.done:
                return batch
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"batch {id} is still {batch.status} after {timeout:g}s")
            await asyncio.sleep(poll)
