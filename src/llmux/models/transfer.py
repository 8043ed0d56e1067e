"""What pulls from any source share: the registry HTTP client, checked manifest
entries, and :class:`Transfer`, which fetches blobs (resumably, one download per blob
at a time), verifies them and installs a manifest. ``pull.py`` (v2 registries) and
``huggingface.py`` (the Hub) build on it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from llmux.config import StoreSettings
from llmux.core.names import ModelName
from llmux.errors import InvalidRequest
from llmux.models import download
from llmux.models.download import BlobDownload, DigestMismatch, OpenRange
from llmux.models.progress import Progress, Report
from llmux.models.registry import RegistryError
from llmux.models.store import ModelStore, blob_name

log = logging.getLogger(__name__)


def new_http(settings: StoreSettings) -> httpx.AsyncClient:
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


class Transfer:
    """Blobs into one store: fetched, verified, committed, and the manifest written."""

    def __init__(self, store: ModelStore, settings: StoreSettings) -> None:
        self.store = store
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}

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
