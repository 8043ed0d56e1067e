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
import logging
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from llmux.config import Settings
from llmux.core.names import ModelName
from llmux.errors import InvalidRequest
from llmux.models import download
from llmux.models.download import BlobDownload, DigestMismatch, OpenRange
from llmux.models.progress import JobBoard, Progress, Report
from llmux.models.registry import RegistryClient, RegistryError, registry_base
from llmux.models.store import ModelStore, blob_name

log = logging.getLogger(__name__)

HF_HOSTS = ("hf.co", "huggingface.co")


def new_http(settings: Settings) -> httpx.AsyncClient:
    """The pooled client one pull or push uses (redirects are followed by hand)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.registry_timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        follow_redirects=False,
        headers={"User-Agent": "llmux"},
    )


def layer_entry(entry: Any) -> tuple[str, int]:
    """``(digest, size)`` of a manifest entry, checked (an invalid digest is refused)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        raise RegistryError("the manifest has a layer without a digest")
    digest = entry["digest"]
    try:
        blob_name(digest)
    except InvalidRequest:
        raise RegistryError(f"the manifest names an invalid digest {digest!r}") from None
    return digest, int(entry.get("size") or 0)


class Puller:
    """Pulls into one store; owned by the app (one per server)."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.board = JobBoard()
        self._locks: dict[str, asyncio.Lock] = {}

    def pull(self, raw: str, insecure: bool = False) -> AsyncGenerator[Progress, None]:
        """Progress of pulling ``raw`` (joining a pull of the same model under way)."""
        name = ModelName.parse(raw)
        if name.host in HF_HOSTS:
            from llmux.models.huggingface import HuggingFacePull

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

    async def fetch_blob(self, digest: str, size: int, report: Report, ranges: OpenRange) -> bool:
        """Download one blob unless the store has it; True when bytes were fetched."""
        status = f"pulling {digest[7:19]}"
        if self.store.blob_path(digest).exists():
            report(Progress(status, digest, size, size))
            return False
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if self.store.blob_path(digest).exists():
                report(Progress(status, digest, size, size))
                return False
            job = BlobDownload(
                self.store.blobs,
                digest,
                size,
                min_part=self.settings.pull_part_min_mib * 1024 * 1024,
                max_parts=self.settings.pull_max_parts,
            )
            if job.resumed:
                log.info("resuming %s at %d of %d bytes", digest[7:19], job.completed, size)
            report(Progress(status, digest, size, job.completed))
            await job.run(ranges, lambda done: report(Progress(status, digest, size, done)))
        return True

    async def verify_and_commit(self, fresh: list[str], report: Report) -> None:
        report(Progress("verifying sha256 digest"))
        try:
            for digest in fresh:
                await download.verify(self.store.blobs, digest)
        except DigestMismatch:
            for digest in fresh:  # what came from this source is not to be trusted
                download.discard(self.store.blobs, digest)
            raise
        for digest in fresh:
            download.commit(self.store.blobs, digest)

    def install(self, name: ModelName, raw: bytes, report: Report) -> None:
        report(Progress("writing manifest"))
        before = self.store.manifest_digests(name)
        self.store.write_manifest_bytes(name, raw)
        unused = before - self.store.manifest_digests(name)
        if unused and self.store.remove_unreferenced(unused):
            report(Progress("removing unused layers"))
        report(Progress("success"))


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
