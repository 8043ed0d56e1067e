"""Ollama's native API: ``/`` and ``/api/*``. Parse, serve, respond."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from llmux import __version__
from llmux.errors import InvalidRequest
from llmux.protocols.ollama import convert
from llmux.protocols.ollama.wire import (
    ChatBody,
    CopyBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    ModelBody,
)
from llmux.server.body import parse_body
from llmux.server.deps import context, gateway, settings
from llmux.server.openapi import request_body
from llmux.server.streaming import respond
from llmux.serving import ollama as serving

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
async def version(request: Request) -> dict[str, str]:
    """The Ollama version whose API llmux speaks (clients gate features on it), and
    llmux's own."""
    return {"version": settings(request).server.ollama_version, "llmux_version": __version__}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    return serving.tags(gateway(request), context(request))


# HEAD answers as GET does (Ollama's clients probe with it); one operation in the docs
router.add_api_route("/api/version", version, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/api/tags", tags, methods=["HEAD"], include_in_schema=False)


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    return serving.ps(gateway(request), context(request))


@router.post("/api/show", openapi_extra=request_body(ModelBody))
async def show(request: Request) -> dict[str, Any]:
    body = await parse_body(request, ModelBody)
    return await serving.show(gateway(request), context(request), body)


@router.post("/api/generate", openapi_extra=request_body(GenerateBody))
async def generate(request: Request) -> Response:
    body = await parse_body(request, GenerateBody)
    reply = await serving.generate(gateway(request), context(request), body)
    return respond(reply, request.url.path)


@router.post("/api/chat", openapi_extra=request_body(ChatBody))
async def chat(request: Request) -> Response:
    body = await parse_body(request, ChatBody)
    reply = await serving.chat(gateway(request), context(request), body)
    return respond(reply, request.url.path)


@router.post("/api/embed", openapi_extra=request_body(EmbedBody))
async def embed(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbedBody)
    return await serving.embed(gateway(request), context(request), body)


@router.post("/api/embeddings", openapi_extra=request_body(EmbeddingsBody))
async def embeddings(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbeddingsBody)
    return await serving.embeddings(gateway(request), context(request), body)


@router.post("/api/copy", openapi_extra=request_body(CopyBody))
async def copy(request: Request) -> Response:
    body = await parse_body(request, CopyBody)
    if not body.source or not body.destination:
        raise InvalidRequest("source and destination are required")
    gateway(request).copy(context(request), body.source, body.destination)
    return Response(status_code=200)


@router.delete("/api/delete", openapi_extra=request_body(ModelBody))
async def delete(request: Request) -> Response:
    body = await parse_body(request, ModelBody)
    await gateway(request).delete(context(request), convert.require_model(body.target))
    return Response(status_code=200)
