"""The model store, laid out like Ollama's so either can read the other's folder::

    <root>/manifests/<host>/<namespace>/<model>/<tag>   manifest JSON (Docker v2 shape)
    <root>/blobs/sha256-<64 hex>                        content-addressed layers

A manifest names a config blob (model format, family, size, quantisation) and layers
by media type (``application/vnd.ollama.image.model`` is the GGUF, others hold a
system prompt, parameters, a template, ...). Writes are atomic (temp file + rename);
blobs are shared between models and removed when no manifest refers to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmux.core.names import ModelName
from llmux.errors import InvalidRequest, ModelNotFound
from llmux.models.gguf import GGUFInfo, read_gguf

log = logging.getLogger(__name__)

MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA = "application/vnd.ollama.image.model"
LAYER_PREFIX = "application/vnd.ollama.image."


def blob_name(digest: str) -> str:
    algo, _, hexpart = digest.replace("-", ":", 1).partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidRequest(f"invalid digest {digest!r}")
    return f"sha256-{hexpart}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One installed model, as resolved from its manifest."""

    name: ModelName
    manifest: dict[str, Any]
    digest: str  # sha256 of the manifest bytes (what /api/tags shows)
    modified_at: datetime
    config: dict[str, Any]
    model_path: Path
    size: int
    layers: dict[str, str]  # text layers by kind: system, template, params, license, ...

    @property
    def params(self) -> dict[str, Any]:
        """The params layer(s): later layers win key by key; text that is not a JSON
        object is skipped with a warning rather than failing every request."""
        raw = self.layers.get("params") or ""
        merged: dict[str, Any] = {}
        decoder = json.JSONDecoder()
        pos = 0
        while pos < len(raw):
            if raw[pos].isspace():
                pos += 1
                continue
            try:
                obj, pos = decoder.raw_decode(raw, pos)
            except ValueError:
                log.warning("model %s: unreadable params layer ignored", self.name.display)
                break
            if isinstance(obj, dict):
                merged.update(obj)
        return merged

    def details(self) -> dict[str, Any]:
        c = self.config
        return {
            "parent_model": "",
            "format": c.get("model_format", "gguf"),
            "family": c.get("model_family", ""),
            "families": c.get("model_families") or [c.get("model_family", "")],
            "parameter_size": c.get("model_type", ""),
            "quantization_level": c.get("file_type", ""),
        }


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self._manifests = str(self.manifests)
        self.blobs = root / "blobs"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._gguf_cache: dict[str, GGUFInfo] = {}
        # manifest path -> ((mtime_ns, size), record): a resolve costs one stat while
        # the manifest is unchanged (layers are content-addressed, so they can't change)
        self._records: dict[Path, tuple[tuple[int, int], ModelRecord]] = {}

    # -- paths ----------------------------------------------------------------
    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.path_parts())

    def blob_path(self, digest: str) -> Path:
        return self.blobs / blob_name(digest)

    # -- reading ----------------------------------------------------------------
    def exists(self, name: ModelName) -> bool:
        # on every request to an upstream-served name: plain string paths, no pathlib
        return os.path.isfile(os.path.join(self._manifests, *name.path_parts()))

    def resolve(self, name: ModelName) -> ModelRecord:
        path = self.manifest_path(name)
        try:
            st = path.stat()
            key = (st.st_mtime_ns, st.st_size)
            cached = self._records.get(path)
            if cached is not None and cached[0] == key and cached[1].name == name:
                return cached[1]
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            self._records.pop(path, None)
            raise ModelNotFound(
                name.display, hint="`llmux list` shows the installed models"
            ) from None
        record = self._record(name, path, raw)
        self._records[path] = (key, record)
        return record

    def _record(self, name: ModelName, path: Path, raw: bytes) -> ModelRecord:
        manifest = json.loads(raw)
        config: dict[str, Any] = {}
        cfg = manifest.get("config") or {}
        if cfg.get("digest"):
            try:
                config = json.loads(self.blob_path(cfg["digest"]).read_bytes())
            except (OSError, ValueError):
                log.warning("model %s: config blob missing or unreadable", name.display)
        model_path: Path | None = None
        layers: dict[str, str] = {}
        size = int(cfg.get("size", 0))
        for layer in manifest.get("layers", []):
            size += int(layer.get("size", 0))
            media = layer.get("mediaType", "")
            if media == MODEL_MEDIA and model_path is None:
                model_path = self.blob_path(layer["digest"])
            elif media.startswith(LAYER_PREFIX):
                kind = media[len(LAYER_PREFIX) :]
                if kind in ("system", "template", "params", "license", "messages"):
                    try:
                        text = self.blob_path(layer["digest"]).read_text("utf-8")
                    except OSError:
                        continue
                    layers[kind] = layers[kind] + "\n" + text if kind in layers else text
        if model_path is None:
            raise InvalidRequest(f"model '{name.display}' has no model layer")
        return ModelRecord(
            name=name,
            manifest=manifest,
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            config=config,
            model_path=model_path,
            size=size,
            layers=layers,
        )

    def installed(self) -> list[ModelRecord]:
        out = []
        for path in self._manifest_files():
            rel = path.relative_to(self.manifests).parts
            name = ModelName(host=rel[0], namespace=rel[1], model=rel[2], tag=rel[3])
            try:
                out.append(self._record(name, path, path.read_bytes()))
            except (OSError, ValueError, InvalidRequest) as exc:
                log.warning("skipping unreadable manifest %s: %s", path, exc)
        out.sort(key=lambda r: r.modified_at, reverse=True)
        return out

    def _manifest_files(self) -> Iterator[Path]:
        for path in self.manifests.glob("*/*/*/*"):
            if path.is_file() and not path.name.startswith("."):
                yield path

    def gguf(self, record: ModelRecord) -> GGUFInfo:
        key = str(record.model_path)
        if key not in self._gguf_cache:
            self._gguf_cache[key] = read_gguf(record.model_path)
        return self._gguf_cache[key]

    def gguf_verbose(self, record: ModelRecord) -> GGUFInfo:
        """The header with every array (vocabulary included); read on demand."""
        return read_gguf(record.model_path, verbose=True)

    # -- writing -------------------------------------------------------------------
    def _atomic_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_blob(self, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            self._atomic_write(path, data)
        return {"digest": digest, "size": len(data)}

    def link_blob(self, source: Path, digest: str | None = None) -> dict[str, Any]:
        """Add a file as a blob without copying it where possible (hard link, then
        symlink, then copy)."""
        digest = digest or sha256_file(source)
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_name(f".tmp-{path.name}")
            tmp.unlink(missing_ok=True)
            try:
                os.link(source, tmp)
            except OSError:
                try:
                    tmp.symlink_to(source.resolve())
                except OSError:
                    shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        return {"digest": digest, "size": source.stat().st_size}

    def write_manifest_bytes(self, name: ModelName, raw: bytes) -> None:
        """Install a manifest as received (so its digest stays the registry's)."""
        self._atomic_write(self.manifest_path(name), raw)

    def manifest_digests(self, name: ModelName) -> set[str]:
        """Blob file names an installed manifest refers to (empty if not installed)."""
        try:
            manifest = json.loads(self.manifest_path(name).read_bytes())
        except (OSError, ValueError):
            return set()
        entries = [manifest.get("config") or {}, *manifest.get("layers", [])]
        return {blob_name(e["digest"]) for e in entries if e.get("digest")}

    def remove_unreferenced(self, candidates: set[str]) -> int:
        """Delete those of ``candidates`` (blob file names) no manifest refers to."""
        doomed = candidates - self.referenced_blobs()
        for blob in doomed:
            (self.blobs / blob).unlink(missing_ok=True)
        return len(doomed)

    def write_manifest(
        self, name: ModelName, config: dict[str, Any], layers: list[dict[str, Any]]
    ) -> None:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, **config},
            "layers": layers,
        }
        self._atomic_write(self.manifest_path(name), json.dumps(manifest, indent=None).encode())

    def import_gguf(
        self,
        name: ModelName,
        source: Path,
        digest: str | None = None,
        text_layers: dict[str, str] | None = None,
    ) -> ModelRecord:
        """Register a GGUF file as a model (linked, not copied, where possible), with
        text layers by kind (``template``, ``params``, ``system``...) if given."""
        info = read_gguf(source)
        model_layer = {"mediaType": MODEL_MEDIA, **self.link_blob(source, digest)}
        layers = [model_layer]
        for kind, text in (text_layers or {}).items():
            layers.append({"mediaType": LAYER_PREFIX + kind, **self.write_blob(text.encode())})
        config_blob = self.write_blob(
            json.dumps(gguf_config(info, [layer["digest"] for layer in layers])).encode()
        )
        self.write_manifest(name, config_blob, layers)
        return self.resolve(name)

    def copy(self, source: ModelName, destination: ModelName) -> None:
        raw = self.manifest_path(source)
        if not raw.is_file():
            raise ModelNotFound(source.display)
        self._atomic_write(self.manifest_path(destination), raw.read_bytes())

    def delete(self, name: ModelName) -> None:
        path = self.manifest_path(name)
        if not path.is_file():
            raise ModelNotFound(name.display)
        path.unlink()
        for parent in list(path.parents)[:3]:  # tidy empty model/namespace/host folders
            try:
                parent.rmdir()
            except OSError:
                break
        self.prune()

    def referenced_blobs(self) -> set[str]:
        refs: set[str] = set()
        for path in self._manifest_files():
            try:
                manifest = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            for entry in [manifest.get("config") or {}, *manifest.get("layers", [])]:
                if entry.get("digest"):
                    refs.add(blob_name(entry["digest"]))
        return refs

    def prune(self) -> int:
        """Remove blobs no manifest refers to; returns how many. Partial downloads stay."""
        refs = self.referenced_blobs()
        removed = 0
        for blob in self.blobs.glob("sha256-*"):
            if "-partial" in blob.name:  # an interrupted download, kept to resume
                continue
            if blob.name not in refs:
                blob.unlink(missing_ok=True)
                removed += 1
        return removed


def gguf_config(info: GGUFInfo, diff_ids: list[str]) -> dict[str, Any]:
    """The config blob Ollama writes for a GGUF model."""
    return {
        "model_format": "gguf",
        "model_family": info.architecture,
        "model_families": [info.architecture],
        "model_type": info.parameter_size,
        "file_type": info.file_type,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
