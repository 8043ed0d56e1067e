"""``hf.co/<user>/<repo>[:<quant>]``: pull a GGUF file from a Hugging Face repository.

The ``huggingface_hub`` library lists the repository (file names, sizes and the LFS
sha256 of each file) at ``settings.hf_endpoint``; the GGUF file matching the tag is
then downloaded like a registry blob (ranged parts, resumable, sha256-verified) and
installed with a config made from its header. The tag picks the quantisation by file
name (``:Q4_K_M`` -> ``*Q4_K_M*.gguf``); ``latest`` prefers Q4_K_M, then the first
file. Projector (``mmproj``) files are skipped. ``HF_TOKEN`` is honoured by the
library for gated repositories; it is only sent to the endpoint's own host.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from llmux.core.names import ModelName
from llmux.errors import ModelNotFound
from llmux.models.download import OpenRange
from llmux.models.gguf import read_gguf
from llmux.models.progress import Progress, Report
from llmux.models.registry import MAX_REDIRECTS, RegistryError
from llmux.models.store import MODEL_MEDIA, gguf_config
from llmux.models.transfer import Transfer, new_http

_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.I)
DEFAULT_QUANT = "q4_k_m"


@dataclass(frozen=True, slots=True)
class GGUFFile:
    filename: str
    digest: str
    size: int


def repo_and_quant(raw: str) -> tuple[str, str]:
    """``hf.co/User/Repo:Q8_0`` -> ``("User/Repo", "q8_0")``, keeping the repo's case."""
    text = raw.strip().split("://", 1)[-1]
    path, _, quant = text.partition(":") if text.count(":") == 1 else (text, "", "")
    parts = path.split("/")
    if len(parts) != 3:
        raise RegistryError(f"{raw!r} is not hf.co/<user>/<repo>[:<quant>]")
    return f"{parts[1]}/{parts[2]}", (quant or "latest").lower()


def choose_file(repo: str, quant: str, files: list[GGUFFile]) -> GGUFFile:
    ggufs = [f for f in files if "mmproj" not in f.filename.lower()]
    if not ggufs:
        raise ModelNotFound(f"hf.co/{repo}", hint="the repository has no GGUF files")
    names = ", ".join(sorted(f.filename for f in ggufs))
    if quant == "latest":
        wanted = [f for f in ggufs if DEFAULT_QUANT in f.filename.lower()] or ggufs
    else:
        pattern = re.compile(rf"(^|[-_.]){re.escape(quant)}([-_.]|$)", re.I)
        wanted = [f for f in ggufs if pattern.search(f.filename.rsplit("/", 1)[-1])]
    if not wanted:
        raise ModelNotFound(
            f"hf.co/{repo}:{quant}", hint=f"no GGUF file for that quantisation; files: {names}"
        )
    whole = [f for f in wanted if not _SPLIT.search(f.filename)]
    if not whole:
        raise RegistryError(
            f"{wanted[0].filename} is split into parts, which llmux cannot load yet; "
            "merge them with llama.cpp's llama-gguf-split --merge and create the model from it"
        )
    return sorted(whole, key=lambda f: (len(f.filename), f.filename))[0]


def _lfs_sha(lfs: Any) -> str | None:
    value = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
    return str(value) if value else None


class HuggingFacePull:
    def __init__(self, puller: Transfer, name: ModelName, raw: str) -> None:
        self.puller = puller
        self.name = name
        self.repo, self.quant = repo_and_quant(raw)
        self.endpoint = puller.settings.hf_endpoint.rstrip("/")

    def _listing(self) -> tuple[str, list[GGUFFile], dict[str, str]]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        api = HfApi(endpoint=self.endpoint, library_name="llmux")
        try:
            info = api.model_info(self.repo, files_metadata=True)
        except RepositoryNotFoundError:
            raise ModelNotFound(
                f"hf.co/{self.repo}",
                hint=f"no such repository at {self.endpoint} (or it is gated: set HF_TOKEN)",
            ) from None
        except Exception as exc:
            raise RegistryError(f"cannot list hf.co/{self.repo} at {self.endpoint}: {exc}") from exc
        files = []
        for sibling in info.siblings or []:
            sha = _lfs_sha(sibling.lfs)
            if sibling.rfilename.lower().endswith(".gguf") and sha:
                size = int(getattr(sibling.lfs, "size", None) or sibling.size or 0)
                files.append(GGUFFile(sibling.rfilename, f"sha256:{sha}", size))
        headers = build_hf_headers(library_name="llmux")
        return info.sha or "main", files, headers

    async def run(self, report: Report) -> None:
        from huggingface_hub import hf_hub_url

        revision, files, headers = await anyio.to_thread.run_sync(self._listing)
        chosen = choose_file(self.repo, self.quant, files)
        report(Progress("pulling manifest"))
        url = hf_hub_url(self.repo, chosen.filename, revision=revision, endpoint=self.endpoint)
        puller = self.puller
        async with new_http(puller.settings) as http:
            ranges = _ranges(http, url, headers)
            fetched = await puller.fetch_blob(chosen.digest, chosen.size, report, ranges)
            await puller.verify_and_commit([chosen.digest] if fetched else [], report)
        store = puller.store
        info = await anyio.to_thread.run_sync(read_gguf, store.blob_path(chosen.digest))
        model = {"mediaType": MODEL_MEDIA, "digest": chosen.digest, "size": chosen.size}
        config = store.write_blob(json.dumps(gguf_config(info, [chosen.digest])).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
            "layers": [model],
        }
        puller.install(self.name, json.dumps(manifest).encode(), report)


def _ranges(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> OpenRange:
    """Ranged GETs of ``url`` after its redirects (auth only to the endpoint's host)."""
    home = urlsplit(url).netloc
    location: str | None = None
    resolving = asyncio.Lock()

    def send(target: str, byte_range: str) -> Any:
        extra = headers if urlsplit(target).netloc == home else {}
        request = http.build_request("GET", target, headers={**extra, "Range": byte_range})
        return http.send(request, stream=True)

    async def resolve() -> str:
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            response = await send(target, "bytes=0-0")
            await response.aclose()
            if not response.is_redirect:
                if response.status_code == 404:
                    raise ModelNotFound(f"hf.co/{url}", hint="the file is gone from the repository")
                return target
            target = urljoin(target, response.headers["location"])
        raise RegistryError(f"too many redirects for {url}")

    async def open_range(start: int, end: int) -> httpx.Response:
        nonlocal location
        async with resolving:
            if location is None:
                location = await resolve()
        response: httpx.Response = await send(location, f"bytes={start}-{end}")
        return response

    return open_range
