"""Model transfers on Ollama's API: ``/api/pull``, ``/api/push``, ``/api/create`` and
``/api/blobs/:digest`` (HEAD/POST).

Pull, push and create stream NDJSON progress lines; with ``"stream": false`` they
answer ``{"status": "success"}`` once done. Errors found before the first line (a bad
name, a missing model or blob, a registry's 404) keep their HTTP status; later ones
end the stream with an ``{"error": ...}`` line.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from llmux.errors import InvalidRequest
from llmux.models.create import CreateSpec
from llmux.protocols.ollama.wire import Wire
from llmux.server import deps
from llmux.server.body import parse_body
from llmux.server.openapi import request_body
from llmux.server.streaming import respond
from llmux.serving import ollama as serving

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


@router.post("/api/pull", openapi_extra=request_body(TransferBody))
async def pull(request: Request) -> Response:
    body = await parse_body(request, TransferBody)
    gw, ctx = deps.gateway(request), deps.context(request)
    reply = await serving.pull(gw, ctx, body.target, body.insecure, body.stream)
    return respond(reply, request.url.path)


@router.post("/api/push", openapi_extra=request_body(TransferBody))
async def push(request: Request) -> Response:
    body = await parse_body(request, TransferBody)
    gw, ctx = deps.gateway(request), deps.context(request)
    reply = await serving.push(gw, ctx, body.target, body.insecure, body.stream)
    return respond(reply, request.url.path)


@router.post("/api/create", openapi_extra=request_body(CreateBody))
async def create(request: Request) -> Response:
    body = await parse_body(request, CreateBody)
    gw, ctx = deps.gateway(request), deps.context(request)
    reply = await serving.create(gw, ctx, body.spec(), body.stream)
    return respond(reply, request.url.path)


@router.api_route("/api/blobs/{digest}", methods=["HEAD"])
async def blob_exists(request: Request, digest: str) -> Response:
    found = deps.gateway(request).has_blob(deps.context(request), digest)
    return Response(status_code=200 if found else 404)


@router.post("/api/blobs/{digest}")
async def blob_upload(request: Request, digest: str) -> Response:
    """Store the raw body as a blob if it hashes to ``digest`` (201; 200 if present)."""
    gw = deps.gateway(request)
    fresh = await gw.put_blob(deps.context(request), digest, request.stream())
    return Response(status_code=201 if fresh else 200)
