"""``/api/pull``: fetch a model from a v2 registry (or Hugging Face) into the store.

Progress, as Ollama reports it::

    pulling manifest
    pulling <hex12>            per layer, with digest / total / completed
    verifying sha256 digest
    writing manifest
    removing unused layers     only when an older version's blobs became unused
    success

Safety: nothing is installed until every layer has arrived and hashed to its digest;
a mismatch discards what this pull downloaded and fails with a message that says so.
Concurrent pulls of one model share a single job; a pull whose clients all left is
cancelled and the next one resumes from the partial files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import httpx

from llmux.config import StoreSettings
from llmux.core.names import ModelName
from llmux.models.download import OpenRange
from llmux.models.huggingface import HuggingFacePull
from llmux.models.progress import JobBoard, Progress, Report
from llmux.models.registry import RegistryClient, registry_base
from llmux.models.store import ModelStore
from llmux.models.transfer import Transfer, layer_entry, new_http

HF_HOSTS = ("hf.co", "huggingface.co")


class Puller(Transfer):
    """Pulls into one store; owned by the app (one per server)."""

    def __init__(self, store: ModelStore, settings: StoreSettings) -> None:
        super().__init__(store, settings)
        self.board = JobBoard()

    def pull(self, raw: str, insecure: bool = False) -> AsyncGenerator[Progress, None]:
        """Progress of pulling ``raw`` (joining a pull of the same model under way)."""
        name = ModelName.parse(raw)
        if name.host in HF_HOSTS:
            hf = HuggingFacePull(self, name, raw)
            return self.board.watch(name.full, hf.run)
        base = registry_base(name, raw, insecure)
        return self.board.watch(name.full, lambda report: self._pull(name, base, insecure, report))

    async def _pull(self, name: ModelName, base: str, insecure: bool, report: Report) -> None:
        async with new_http(self.settings) as http:
            registry = RegistryClient(name, base, http, insecure=insecure)
            manifest, raw = await registry.get_manifest()
            report(Progress("pulling manifest"))
            entries = [*manifest["layers"], manifest.get("config") or {}]
            layers = list(dict.fromkeys(layer_entry(e) for e in entries if e))
            fresh: list[str] = []
            for digest, size in layers:
                if await self.fetch_blob(digest, size, report, _registry_ranges(registry, digest)):
                    fresh.append(digest)
            await self.verify_and_commit(fresh, report)
            self.install(name, raw, report)


def _registry_ranges(registry: RegistryClient, digest: str) -> OpenRange:
    """Ranged GETs of one blob, sent where its first redirect points."""
    location: str | None = None
    resolving = asyncio.Lock()

    async def open_range(start: int, end: int) -> httpx.Response:
        nonlocal location
        async with resolving:
            if location is None:
                location = await registry.blob_location(digest)
        headers = {"Range": f"bytes={start}-{end}"}
        return await registry.send("GET", location, headers=headers, stream=True)

    return open_range
