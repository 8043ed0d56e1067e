"""The OpenAI API (and DeepSeek's additions), request-free: parsed wire bodies in,
replies in OpenAI's shape out. The Batch API calls these with ``stream: false``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from llmux.core.chunks import ChatChunk
from llmux.core.context import RequestContext
from llmux.errors import InvalidRequest
from llmux.gateway import Gateway
from llmux.protocols.openai import convert
from llmux.protocols.openai.stream import (
    ChatRenderer,
    CompletionRenderer,
    embedding_list,
    model_object,
)
from llmux.protocols.openai.wire import ChatCompletionBody, CompletionBody, EmbeddingBody
from llmux.serving.reply import Reply, prime

FIM_MAX_TOKENS = 4096  # DeepSeek's cap for /beta/completions


async def chat_completions(
    gw: Gateway,
    ctx: RequestContext,
    body: ChatCompletionBody,
    reasoning_fields: Sequence[str] = ("reasoning_content",),
) -> Reply:
    core = convert.chat_to_core(body)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    renderer = ChatRenderer(
        body.model,
        include_usage=include_usage,
        logprobs=body.logprobs,
        reasoning_fields=tuple(reasoning_fields),
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )
    chunks = await prime(gw.chat(ctx, core, stream=body.stream))
    if body.stream:
        usage = renderer.usage_chunk if include_usage else None
        return Reply("sse", events=_events(chunks, renderer.chunk, usage))
    async for chunk in chunks:
        renderer.chunk(chunk)
    return Reply.json(renderer.whole())


async def completions(gw: Gateway, ctx: RequestContext, body: CompletionBody) -> Reply:
    """Legacy completions; several prompts are one operation (one pass of the chain)."""
    prompts = convert.completion_prompts(body)
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
    requests = [convert.completion_to_core(body, p) for p in prompts]
    chunks = await prime(gw.chat(ctx, *requests, stream=body.stream))
    if body.stream:
        usage = renderer.usage_chunk if include_usage else None
        render = lambda c: renderer.chunk(c, echoes.get(c.index, ""))  # noqa: E731
        return Reply("sse", events=_events(chunks, render, usage))
    async for chunk in chunks:
        renderer.chunk(chunk)
    return Reply.json(renderer.whole(echoes))


async def fim_completions(gw: Gateway, ctx: RequestContext, body: CompletionBody) -> Reply:
    """DeepSeek's ``/beta/completions``: fill-in-the-middle with ``suffix``."""
    if (body.max_tokens or 0) > FIM_MAX_TOKENS:
        raise InvalidRequest(
            f"max_tokens for FIM completion is at most {FIM_MAX_TOKENS}", param="max_tokens"
        )
    return await completions(gw, ctx, body)


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


async def embeddings(gw: Gateway, ctx: RequestContext, body: EmbeddingBody) -> dict[str, Any]:
    result = await gw.embed(ctx, convert.embed_to_core(body))
    out = embedding_list(result, body.encoding_format)
    out["model"] = body.model
    return out


def list_models(gw: Gateway, ctx: RequestContext) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in gw.models(ctx, aliases=True)]}


def get_model(gw: Gateway, ctx: RequestContext, model_id: str) -> dict[str, Any]:
    return model_object(gw.model(ctx, model_id))
