"""``client.files`` and ``client.batches`` of the blocking :class:`~llmux.Client`: the
Batch API (docs/batch.md). The calls are ``batch_calls.py``'s; this carries them out."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from llmux.client import batch_calls as bc
from llmux.client import types as t
from llmux.client.errors import raise_for_status, transport_error

if TYPE_CHECKING:
    from llmux.client.sync import Client

Progress = Callable[[t.Batch], object]


def part_path(dest: Path) -> Path:
    """Where a download is written before it is complete (then renamed to ``dest``)."""
    return dest.with_name(f".{dest.name}.part")


class Files:
    """``client.files``: upload, list, show, download and delete the Batch API's files."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, file: bc.FileSource, *, purpose: str = "batch", filename: str | None = None
    ) -> t.FileObject:
        """Upload a JSON Lines file: a path, the bytes, or an open binary file."""
        name = bc.upload_name(file, filename)
        if isinstance(file, str | os.PathLike):
            with open(os.fspath(file), "rb") as f:
                return self._client._one(bc.file_upload(f, name, purpose))
        return self._client._one(bc.file_upload(file, name, purpose))

    def list(
        self,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        order: bc.Order | None = None,
    ) -> t.FileList:
        """One page of the caller's files (newest first by default)."""
        return self._client._one(bc.file_list(purpose, after, limit, order))

    def iterate(
        self, *, purpose: str | None = None, order: bc.Order | None = None, page_size: int = 100
    ) -> Iterator[t.FileObject]:
        """Every file, page after page."""
        after: str | None = None
        while True:
            page = self.list(purpose=purpose, after=after, limit=page_size, order=order)
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    def get(self, id: str) -> t.FileObject:
        return self._client._one(bc.file_get(id))

    def delete(self, id: str) -> t.FileDeleted:
        return self._client._one(bc.file_delete(id))

    def content(self, id: str) -> bytes:
        """The file's bytes, read whole (``download`` writes a large one to disk)."""
        response = self._client._open(bc.file_content(id))
        try:
            response.read()
        except httpx.TransportError as exc:
            raise transport_error(exc, self._client.base_url) from exc
        finally:
            response.close()
        raise_for_status(response)
        return response.content

    def download(self, id: str, path: str | os.PathLike[str]) -> int:
        """Stream the file's bytes to ``path``; returns how many were written. The file
        appears only when complete (written beside it first, then renamed)."""
        dest = Path(path)
        part = part_path(dest)
        response = self._client._open(bc.file_content(id))
        try:
            if response.status_code >= 400:
                response.read()
                raise_for_status(response)
            written = 0
            with part.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
            part.replace(dest)
            return written
        except httpx.TransportError as exc:
            raise transport_error(exc, self._client.base_url) from exc
        finally:
            response.close()
            part.unlink(missing_ok=True)


class Batches:
    """``client.batches``: create, show, list, cancel and wait for batches."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        input_file_id: str,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> t.Batch:
        """Run the requests of an uploaded file (``files.create``) at low priority."""
        call = bc.batch_create(input_file_id, endpoint, completion_window, metadata)
        return self._client._one(call)

    def get(self, id: str) -> t.Batch:
        return self._client._one(bc.batch_get(id))

    def list(self, *, after: str | None = None, limit: int | None = None) -> t.BatchList:
        """One page of the caller's batches, newest first (``limit`` 1 to 100, default 20)."""
        return self._client._one(bc.batch_list(after, limit))

    def iterate(self, *, page_size: int = 100) -> Iterator[t.Batch]:
        """Every batch, newest first, page after page."""
        after: str | None = None
        while True:
            page = self.list(after=after, limit=page_size)
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    def cancel(self, id: str) -> t.Batch:
        """Ask a batch to stop: it is ``cancelling``, then ``cancelled``."""
        return self._client._one(bc.batch_cancel(id))

    def wait(
        self,
        id: str,
        *,
        poll: float = bc.DEFAULT_POLL_S,
        timeout: float | None = None,
        on_progress: Progress | None = None,
    ) -> t.Batch:
        """Poll every ``poll`` seconds until the batch is completed, failed, expired or
        cancelled, and return it; ``on_progress(batch)`` sees every poll. Raises
        ``TimeoutError`` after ``timeout`` seconds (the batch runs on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get(id)
            if on_progress is not None:
                on_progress(batch)
            if batch.done:
                return batch
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"batch {id} is still {batch.status} after {timeout:g}s")
            time.sleep(poll)
