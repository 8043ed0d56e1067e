"""Model management over the store: pull, push, create, copy, delete and blob uploads.

The gateway owns one :class:`ModelManager` and is the only caller; long operations
report :class:`~llmux.models.progress.Progress` lines, and two clients asking for the
same transfer share one job.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import anyio

from llmux.config import StoreSettings
from llmux.core.names import ModelName
from llmux.errors import InvalidRequest
from llmux.models.bundled import bundled_gguf
from llmux.models.create import Create, CreateSpec
from llmux.models.progress import Progress, Report
from llmux.models.pull import Puller
from llmux.models.push import Push
from llmux.models.registry import registry_base
from llmux.models.store import ModelStore, sha256_file


class ModelManager:
    def __init__(self, store: ModelStore, settings: StoreSettings) -> None:
        self.store = store
        self.settings = settings
        self.puller = Puller(store, settings)  # holds the running transfers

    def installed(self, name: str) -> bool:
        try:
            return self.store.exists(ModelName.parse(name))
        except InvalidRequest:
            return False

    def pull(self, name: str, insecure: bool) -> AsyncGenerator[Progress, None]:
        """From a registry; the bundled model's name comes back from the installed
        package (no network), so a deleted default model can be restored offline."""
        bundled = self.settings.bundled_model
        if bundled and ModelName.parse(name) == ModelName.parse(bundled):
            source = bundled_gguf()
            if source is not None:
                return self.puller.board.watch(
                    "bundled " + bundled, lambda report: self._restore(bundled, source, report)
                )
        return self.puller.pull(name, insecure)

    async def _restore(self, name: str, source: Path, report: Report) -> None:
        report(Progress("pulling manifest"))
        size = source.stat().st_size
        digest = await anyio.to_thread.run_sync(sha256_file, source)
        report(Progress(f"pulling {digest[7:19]}", digest, size, size))
        report(Progress("verifying sha256 digest"))
        await anyio.to_thread.run_sync(
            self.store.import_gguf, ModelName.parse(name), source, digest
        )
        report(Progress("writing manifest"))
        report(Progress("success"))

    def push(self, name: str, insecure: bool) -> AsyncGenerator[Progress, None]:
        parsed = ModelName.parse(name)
        job = Push(
            self.store,
            self.puller.settings,
            parsed,
            registry_base(parsed, name, insecure),
            insecure,
        )
        return self.puller.board.watch("push " + parsed.full, job.run)

    def create(self, spec: CreateSpec) -> AsyncGenerator[Progress, None]:
        job = Create(self.store, spec)
        return self.puller.board.watch("create " + job.name.full, job.run)

    def copy(self, source: str, destination: str) -> None:
        self.store.copy(ModelName.parse(source), ModelName.parse(destination))

    def check_installed(self, name: str) -> ModelName:
        """The parsed name; ModelNotFound before anything changes if it is not there."""
        parsed = ModelName.parse(name)
        self.store.resolve(parsed)
        return parsed

    def delete(self, name: ModelName) -> None:
        self.store.delete(name)

    # -- blobs ------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.store.blob_path(digest).is_file()  # 400 for a malformed digest

    async def put_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> bool:
        """Store ``chunks`` as a blob if they hash to ``digest``; False if it was there."""
        path = self.store.blob_path(digest)
        if path.is_file():
            return False
        expected = "sha256:" + path.name.removeprefix("sha256-")
        fd, tmp = tempfile.mkstemp(dir=self.store.blobs, prefix=".tmp-upload-")
        hasher = hashlib.sha256()

        def write(chunk: bytes) -> None:
            os.write(fd, chunk)
            hasher.update(chunk)

        try:
            async for chunk in chunks:
                if chunk:
                    await anyio.to_thread.run_sync(write, chunk)
            os.close(fd)
            fd = -1
            actual = "sha256:" + hasher.hexdigest()
            if actual != expected:
                raise InvalidRequest(
                    f"digest mismatch: the body hashes to {actual}, not {expected}; "
                    "compute the digest with `sha256sum FILE` and send the file unchanged"
                )
            os.replace(tmp, path)
        finally:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
        return True
