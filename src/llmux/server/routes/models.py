"""Model transfers on Ollama's API: ``/api/pull``, ``/api/push``, ``/api/create`` and
``/api/blobs/:digest`` (HEAD/POST).

Pull, push and create stream NDJSON progress lines; with ``"stream": false`` they
answer ``{"status": "success"}`` once done. Errors found before the first line (a bad
name, a missing model or blob, a registry's 404) keep their HTTP status; later ones
end the stream with an ``{"error": ...}`` line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmux.core.names import ModelName
from llmux.errors import InvalidRequest, LlmuxError
from llmux.models.create import Create, CreateSpec
from llmux.models.progress import Progress
from llmux.models.pull import Puller
from llmux.models.push import Push
from llmux.models.registry import registry_base
from llmux.protocols.ollama.wire import Wire
from llmux.server import deps
from llmux.server.body import parse_body
from llmux.server.streaming import dumps, prime

log = logging.getLogger(__name__)
router = APIRouter()


class TransferBody(Wire):
    """``/api/pull`` and ``/api/push``."""

    model: str = ""
    name: str = ""  # older clients
    insecure: bool = False
    stream: bool = True

    @property
    def target(self) -> str:
        if not (self.model or self.name).strip():
            raise InvalidRequest("model is required", param="model")
        return self.model or self.name


class CreateBody(Wire):
    model: str = ""
    name: str = ""  # deprecated spelling
    from_: str | None = Field(None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    license: str | list[str] | None = None
    quantize: str | None = None
    quantization: str | None = None  # deprecated spelling
    stream: bool = True

    def spec(self) -> CreateSpec:
        if not (self.model or self.name).strip():
            raise InvalidRequest("model is required", param="model")
        license = [self.license] if isinstance(self.license, str) else self.license
        return CreateSpec(
            model=self.model or self.name,
            from_=self.from_ or None,
            files=dict(self.files or {}),
            adapters=dict(self.adapters or {}),
            template=self.template,
            system=self.system,
            parameters=dict(self.parameters or {}),
            messages=self.messages,
            license=license,
            quantize=self.quantize or self.quantization or None,
        )


def puller(request: Request) -> Puller:
    """The app's one Puller (it holds the running transfers)."""
    found: Puller = request.app.state.puller
    return found


async def _ndjson(
    lines: AsyncIterator[Progress], source: AsyncGenerator[Progress, None]
) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield dumps(line.wire()) + "\n"
    except LlmuxError as exc:
        yield dumps({"error": exc.message}) + "\n"
    except Exception:
        log.exception("model transfer failed")
        yield dumps({"error": "internal server error; see the server log"}) + "\n"
    finally:
        await source.aclose()  # a client that hung up stops watching (and maybe the job)


async def progress_reply(source: AsyncGenerator[Progress, None], stream: bool) -> Response:
    lines = await prime(source)
    if stream:
        return StreamingResponse(_ndjson(lines, source), media_type="application/x-ndjson")
    last = Progress("success")
    async for line in lines:
        last = line
    return JSONResponse({"status": last.status})


@router.post("/api/pull")
async def pull(request: Request) -> Response:
    body = await parse_body(request, TransferBody)
    return await progress_reply(puller(request).pull(body.target, body.insecure), body.stream)


@router.post("/api/push")
async def push(request: Request) -> Response:
    body = await parse_body(request, TransferBody)
    p = puller(request)
    name = ModelName.parse(body.target)
    job = Push(
        p.store, p.settings, name, registry_base(name, body.target, body.insecure), body.insecure
    )
    return await progress_reply(p.board.watch("push " + name.full, job.run), body.stream)


@router.post("/api/create")
async def create(request: Request) -> Response:
    body = await parse_body(request, CreateBody)
    p = puller(request)
    job = Create(p.store, body.spec())
    return await progress_reply(p.board.watch("create " + job.name.full, job.run), body.stream)


@router.api_route("/api/blobs/{digest}", methods=["HEAD"])
async def blob_exists(request: Request, digest: str) -> Response:
    path = deps.gateway(request).store.blob_path(digest)
    return Response(status_code=200 if path.is_file() else 404)


@router.post("/api/blobs/{digest}")
async def blob_upload(request: Request, digest: str) -> Response:
    """Store the raw body as a blob if it hashes to ``digest`` (201; 200 if present)."""
    store = deps.gateway(request).store
    path = store.blob_path(digest)  # 400 for a malformed digest
    if path.is_file():
        return Response(status_code=200)
    expected = "sha256:" + path.name.removeprefix("sha256-")
    fd, tmp = tempfile.mkstemp(dir=store.blobs, prefix=".tmp-upload-")
    hasher = hashlib.sha256()

    def write(chunk: bytes) -> None:
        os.write(fd, chunk)
        hasher.update(chunk)

    try:
        async for chunk in request.stream():
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
    return Response(status_code=201)
