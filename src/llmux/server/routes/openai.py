"""The OpenAI API under ``/v1``, and at the bare root as DeepSeek clients call it.

DeepSeek's own additions (``/beta/*``, ``/user/balance``) live in ``deepseek.py`` and
reuse the handlers here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from llmux.core.chunks import ChatChunk
from llmux.core.names import ModelName
from llmux.core.request import RequestContext
from llmux.gateway import Gateway
from llmux.protocols.openai import convert
from llmux.protocols.openai.stream import (
    ChatRenderer,
    CompletionRenderer,
    embedding_list,
    model_object,
)
from llmux.protocols.openai.wire import ChatCompletionBody, CompletionBody, EmbeddingBody
from llmux.server import deps
from llmux.server.body import parse_body
from llmux.server.deps import gateway
from llmux.server.streaming import prime, sse_response
from llmux.upstream import listing

router = APIRouter()


def context(request: Request) -> RequestContext:
    return deps.context(request, "openai" if request.url.path.startswith("/v1/") else "deepseek")


async def chat_completions(request: Request) -> Response:
    body = await parse_body(request, ChatCompletionBody)
    core = convert.chat_to_core(body)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    renderer = ChatRenderer(
        body.model,
        include_usage=include_usage,
        logprobs=body.logprobs,
        reasoning_fields=tuple(deps.settings(request).reasoning_fields),
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )
    chunks = await prime(gateway(request).chat(context(request), core))
    if body.stream:
        usage = renderer.usage_chunk if include_usage else None
        return sse_response(_events(chunks, renderer.chunk, usage))
    async for chunk in chunks:
        renderer.chunk(chunk)
    return JSONResponse(renderer.whole())


async def _events(
    chunks: AsyncIterator[ChatChunk],
    render: Callable[[ChatChunk], list[dict[str, Any]]],
    usage: Callable[[], dict[str, Any]] | None,
) -> AsyncIterator[dict[str, Any]]:
    """SSE payloads for a rendered stream, with the usage chunk last when asked for."""
    async for chunk in chunks:
        for obj in render(chunk):
            yield obj
    if usage is not None:
        yield usage()


async def completions(request: Request) -> Response:
    return await run_completions(request, await parse_body(request, CompletionBody))


async def run_completions(request: Request, body: CompletionBody) -> Response:
    prompts = convert.completion_prompts(body)
    gw, ctx = gateway(request), context(request)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    renderer = CompletionRenderer(
        body.model, include_usage=include_usage, logprobs=body.logprobs is not None
    )
    echoes = {
        i * body.n + k: p
        for i, p in enumerate(prompts)
        for k in range(body.n)
        if body.echo and isinstance(p, str)
    }

    async def merged() -> AsyncIterator[ChatChunk]:
        for i, prompt in enumerate(prompts):
            async for chunk in gw.chat(ctx, convert.completion_to_core(body, prompt)):
                yield dataclasses.replace(chunk, index=i * body.n + chunk.index)

    chunks = await prime(merged())
    if body.stream:
        usage = renderer.usage_chunk if include_usage else None
        render = lambda c: renderer.chunk(c, echoes.get(c.index, ""))  # noqa: E731
        return sse_response(_events(chunks, render, usage))
    async for chunk in chunks:
        renderer.chunk(chunk)
    return JSONResponse(renderer.whole(echoes))


async def embeddings(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbeddingBody)
    result = await gateway(request).embed(context(request), convert.embed_to_core(body))
    out = embedding_list(result, body.encoding_format)
    out["model"] = body.model
    return out


def _models(gw: Gateway) -> list[dict[str, Any]]:
    out = [
        model_object(r.name.display, int(r.modified_at.timestamp()), r.name.namespace)
        for r in gw.store.installed()
    ]
    created = min((m["created"] for m in out), default=0)
    remote = listing.unique(gw.upstream_models(), {m["id"] for m in out})
    out += [listing.model_object(item) for item in remote]
    out += [model_object(alias, created, "llmux") for alias in gw.aliases]
    return out


async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": _models(gateway(request))}


async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    gw = gateway(request)
    if model_id.lower() in gw.aliases:
        return next(m for m in _models(gw) if m["id"] == model_id.lower())
    name = gw.resolve_name(model_id)
    if gw.upstreams.targets(name):
        return next(m for m in _models(gw) if m["id"] == name)
    record = gw.store.resolve(ModelName.parse(gw.resolve_name(model_id)))
    return model_object(model_id, int(record.modified_at.timestamp()), record.name.namespace)


for prefix in ("/v1", ""):
    router.add_api_route(prefix + "/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route(prefix + "/completions", completions, methods=["POST"])
    router.add_api_route(prefix + "/embeddings", embeddings, methods=["POST"])
    router.add_api_route(prefix + "/models", list_models, methods=["GET"])
    router.add_api_route(prefix + "/models/{model_id:path}", get_model, methods=["GET"])
