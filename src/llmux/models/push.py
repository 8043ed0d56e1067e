"""``/api/push``: upload an installed model to a v2 registry.

Progress, as Ollama reports it::

    retrieving manifest
    pushing <hex12>        per blob, with digest / total / completed
    pushing manifest
    success

Blobs the registry already has (``HEAD`` answers 200) are not sent again; the others
go up in ``PATCH`` chunks with ``Content-Range``, then the manifest is ``PUT`` exactly
as stored, so the registry's digest for it matches the local one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio

from llmux.config import StoreSettings
from llmux.core.names import ModelName
from llmux.errors import InvalidRequest
from llmux.models.progress import Progress, Report
from llmux.models.registry import MANIFEST_ACCEPT, RegistryClient
from llmux.models.store import ModelStore
from llmux.models.transfer import layer_entry, new_http

UPLOAD_CHUNK = 64 * 1024 * 1024
READ_SIZE = 1024 * 1024


class Push:
    def __init__(
        self, store: ModelStore, settings: StoreSettings, name: ModelName, base: str, insecure: bool
    ) -> None:
        self.store = store
        self.settings = settings
        self.name = name
        self.base = base
        self.insecure = insecure
        store.resolve(name)  # 404 before anything streams

    async def run(self, report: Report) -> None:
        report(Progress("retrieving manifest"))
        raw = self.store.manifest_path(self.name).read_bytes()
        manifest = json.loads(raw)
        entries = [*manifest.get("layers", []), manifest.get("config") or {}]
        blobs = list(dict.fromkeys(layer_entry(e) for e in entries if e))
        async with new_http(self.settings) as http:
            registry = RegistryClient(self.name, self.base, http, insecure=self.insecure)
            for digest, size in blobs:
                await self._blob(registry, digest, size, report)
            report(Progress("pushing manifest"))
            await registry.put_manifest(raw, manifest.get("mediaType") or MANIFEST_ACCEPT)
        report(Progress("success"))

    async def _blob(self, registry: RegistryClient, digest: str, size: int, report: Report) -> None:
        status = f"pushing {digest[7:19]}"
        path = self.store.blob_path(digest)
        if not path.is_file():
            raise InvalidRequest(
                f"blob {digest} of {self.name.display} is missing from the store; "
                f"pull or create the model again before pushing it"
            )
        if await registry.has_blob(digest):
            report(Progress(status, digest, size, size))
            return
        report(Progress(status, digest, size, 0))
        sent = 0

        async def chunks(offset: int, length: int) -> AsyncIterator[bytes]:
            nonlocal sent
            with path.open("rb") as f:
                f.seek(offset)
                left = length
                while left:
                    data = await anyio.to_thread.run_sync(f.read, min(READ_SIZE, left))
                    if not data:
                        raise InvalidRequest(f"blob {digest} is shorter than its manifest says")
                    left -= len(data)
                    sent += len(data)
                    yield data
                    report(Progress(status, digest, size, sent))

        await registry.upload(digest, size, chunks, UPLOAD_CHUNK)
        report(Progress(status, digest, size, size))
