"""Ollama's native API, request-free: parsed wire bodies in, replies in Ollama's shape out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from llmux.core.context import RequestContext
from llmux.core.request import LoadOptions
from llmux.errors import InvalidRequest, LlmuxError
from llmux.gateway import Gateway
from llmux.models.create import CreateSpec
from llmux.models.progress import Progress
from llmux.protocols.ollama import convert
from llmux.protocols.ollama import stream as render
from llmux.protocols.ollama.models import ps_entry, show_object, tag_entry
from llmux.protocols.ollama.wire import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    ModelBody,
)
from llmux.serving.reply import Reply, ndjson_reply, prime


async def generate(gw: Gateway, ctx: RequestContext, body: GenerateBody) -> Reply:
    core = convert.generate_to_core(body)
    model = gw.resolve_name(core.model)
    if not body.prompt and not body.suffix and not body.images:
        return await lifecycle(gw, ctx, model, core.keep_alive, core.load, chat=False)
    chunks = gw.chat(ctx, core, stream=body.stream)
    return await ndjson_reply(chunks, lambda c: render.generate_object(c, model), body.stream)


async def chat(gw: Gateway, ctx: RequestContext, body: ChatBody) -> Reply:
    core = convert.chat_to_core(body)
    model = gw.resolve_name(core.model)
    if not core.messages:
        return await lifecycle(gw, ctx, model, core.keep_alive, core.load, chat=True)
    chunks = gw.chat(ctx, core, stream=body.stream)
    return await ndjson_reply(chunks, lambda c: render.chat_object(c, model), body.stream)


async def lifecycle(
    gw: Gateway,
    ctx: RequestContext,
    model: str,
    keep_alive: float | None,
    load: LoadOptions,
    *,
    chat: bool,
) -> Reply:
    """Empty prompt/messages: load the model, or unload it with ``keep_alive: 0``."""
    if keep_alive == 0:
        await gw.unload(ctx, model)
        return Reply.json(render.lifecycle_object(model, "unload", chat=chat))
    load_ns = await gw.load(ctx, model, keep_alive, load)
    return Reply.json(render.lifecycle_object(model, "load", chat=chat, load_ns=load_ns))


async def embed(gw: Gateway, ctx: RequestContext, body: EmbedBody) -> dict[str, Any]:
    return render.embed_object(await gw.embed(ctx, convert.embed_to_core(body)))


async def embeddings(gw: Gateway, ctx: RequestContext, body: EmbeddingsBody) -> dict[str, Any]:
    core = convert.embeddings_to_core(body)
    if not core.inputs:
        gw.require_model(core.model)  # 404 if unknown
        return {"embedding": []}
    result = await gw.embed(ctx, core)
    return {"embedding": result.embeddings[0]}


def tags(gw: Gateway, ctx: RequestContext) -> dict[str, Any]:
    return {"models": [tag_entry(m) for m in gw.models(ctx)]}


def ps(gw: Gateway, ctx: RequestContext) -> dict[str, Any]:
    return {"models": [ps_entry(m) for m in gw.ps(ctx)]}


async def show(gw: Gateway, ctx: RequestContext, body: ModelBody) -> dict[str, Any]:
    card = await gw.show(ctx, convert.require_model(body.target), body.verbose)
    return show_object(card)


# -- model transfers ---------------------------------------------------------------------


async def progress(source: AsyncGenerator[Progress, None], stream: bool) -> Reply:
    """Pull/push/create progress lines; with ``stream: false``, the last status alone."""
    lines = await prime(source)
    if stream:
        return Reply("ndjson", events=_progress_lines(lines, source))
    last = Progress("success")
    async for line in lines:
        last = line
    return Reply.json({"status": last.status})


async def _progress_lines(
    lines: AsyncIterator[Progress], source: AsyncGenerator[Progress, None]
) -> AsyncIterator[dict[str, Any]]:
    try:
        async for line in lines:
            yield line.wire()
    finally:
        await source.aclose()  # a client that hung up stops watching (and maybe the job)


async def pull(gw: Gateway, ctx: RequestContext, model: str, insecure: bool, stream: bool) -> Reply:
    """As Ollama does, a streaming pull that the registry cannot serve (no such model,
    no registry) answers 200, ``pulling manifest``, then an error line; a bad name is
    still a 400, and ``stream: false`` keeps the error's status."""
    source = gw.pull(ctx, model, insecure)
    if not stream:
        return await progress(source, False)
    try:
        return await progress(source, True)
    except InvalidRequest:
        raise
    except LlmuxError as exc:
        return Reply("ndjson", events=_failed_pull(exc))


async def _failed_pull(error: LlmuxError) -> AsyncIterator[dict[str, Any]]:
    yield Progress("pulling manifest").wire()
    raise error


async def push(gw: Gateway, ctx: RequestContext, model: str, insecure: bool, stream: bool) -> Reply:
    return await progress(gw.push(ctx, model, insecure), stream)


async def create(gw: Gateway, ctx: RequestContext, spec: CreateSpec, stream: bool) -> Reply:
    return await progress(gw.create(ctx, spec), stream)
