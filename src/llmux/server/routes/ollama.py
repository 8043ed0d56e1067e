"""Ollama's native API: ``/`` and ``/api/*``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from llmux import __version__
from llmux.core.names import ModelName
from llmux.core.request import RequestContext
from llmux.errors import InvalidRequest
from llmux.gateway import Gateway
from llmux.models.modelfile import parameters_text, record_messages, render_modelfile
from llmux.models.store import ModelRecord, rfc3339
from llmux.protocols.ollama import convert
from llmux.protocols.ollama import stream as render
from llmux.protocols.ollama.wire import (
    ChatBody,
    CopyBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    ModelBody,
)
from llmux.server import deps
from llmux.server.body import parse_body
from llmux.server.deps import gateway
from llmux.server.streaming import ollama_reply
from llmux.upstream import listing

router = APIRouter()
FOREVER = datetime(2318, 1, 1, tzinfo=UTC)


def context(request: Request) -> RequestContext:
    return deps.context(request, "ollama")


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("Ollama is running")


@router.api_route("/api/version", methods=["GET", "HEAD"])
async def version() -> dict[str, str]:
    return {"version": __version__}


def tag_entry(record: ModelRecord) -> dict[str, Any]:
    return {
        "name": record.name.display,
        "model": record.name.display,
        "modified_at": rfc3339(record.modified_at),
        "size": record.size,
        "digest": record.digest,
        "details": record.details(),
    }


@router.api_route("/api/tags", methods=["GET", "HEAD"])
async def tags(request: Request) -> dict[str, Any]:
    gw = gateway(request)
    local = [tag_entry(r) for r in gw.store.installed()]
    taken = {m["name"] for m in local}
    remote = listing.unique(gw.upstream_models(), taken)
    return {"models": local + [listing.tag_entry(item) for item in remote]}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    models = []
    for m in gateway(request).engine.loaded():
        expires = FOREVER if m.expires_at is None else datetime.fromtimestamp(m.expires_at, UTC)
        models.append(
            {
                "name": m.name,
                "model": m.name,
                "size": m.size,
                "digest": m.digest,
                "details": m.details,
                "expires_at": rfc3339(expires),
                "size_vram": m.size_vram,
                "context_length": m.context_length,
            }
        )
    return {"models": models}


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    body = await parse_body(request, ModelBody)
    gw = gateway(request)
    name = gw.resolve_name(convert.require_model(body.target))
    if gw.upstreams.targets(name) and not gw.installed_locally(name):
        return await upstream_show(gw, name)
    record = gw.engine.record(name)
    info = gw.store.gguf(record)
    template = record.layers.get("template") or info.chat_template or ""
    details = record.details()
    if info.context_length:
        details["context_length"] = info.context_length
    if info.embedding_length:
        details["embedding_length"] = info.embedding_length
    out: dict[str, Any] = {
        "modelfile": render_modelfile(record, template),
        "parameters": parameters_text(record.params),
        "template": template,
        "details": details,
        "model_info": (info if not body.verbose else gw.store.gguf_verbose(record)).model_info(
            body.verbose
        ),
        "capabilities": gw.engine.capabilities(record),
        "modified_at": rfc3339(record.modified_at),
    }
    if record.layers.get("system"):
        out["system"] = record.layers["system"]
    if record.layers.get("license"):
        out["license"] = record.layers["license"]
    if record_messages(record):
        out["messages"] = record_messages(record)
    return out


async def upstream_show(gw: Gateway, name: str) -> dict[str, Any]:
    """Proxied to the first Ollama-type upstream that serves ``name``; else a summary."""
    items = [i for i in gw.upstream_models() if i.name == name]
    for item in items:
        if item.upstream.type == "ollama":
            shown: dict[str, Any] = await item.upstream.show(item.upstream_model)
            shown.setdefault("details", {})["upstream"] = item.upstream.name
            return shown
    return listing.show_object(items[0])


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    body = await parse_body(request, GenerateBody)
    core = convert.generate_to_core(body)
    gw = gateway(request)
    model = gw.resolve_name(core.model)
    if not body.prompt and not body.suffix and not body.images:
        return await lifecycle(gw, model, core.keep_alive, core.load, chat=False)
    return await ollama_reply(
        gw.chat(context(request), core), lambda c: render.generate_object(c, model), body.stream
    )


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    body = await parse_body(request, ChatBody)
    core = convert.chat_to_core(body)
    gw = gateway(request)
    model = gw.resolve_name(core.model)
    if not core.messages:
        return await lifecycle(gw, model, core.keep_alive, core.load, chat=True)
    return await ollama_reply(
        gw.chat(context(request), core), lambda c: render.chat_object(c, model), body.stream
    )


async def lifecycle(
    gw: Gateway, model: str, keep_alive: float | None, load: Any, *, chat: bool
) -> Response:
    """Empty prompt/messages: load the model, or unload it with ``keep_alive: 0``."""
    if gw.upstreams.targets(model) and not gw.installed_locally(model):
        return JSONResponse(render.lifecycle_object(model, "load", chat=chat))  # upstream's own
    if keep_alive == 0:
        await gw.engine.unload(model)
        return JSONResponse(render.lifecycle_object(model, "unload", chat=chat))
    load_ns = await gw.engine.load(model, keep_alive, load)
    return JSONResponse(render.lifecycle_object(model, "load", chat=chat, load_ns=load_ns))


@router.post("/api/embed")
async def embed(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbedBody)
    result = await gateway(request).embed(context(request), convert.embed_to_core(body))
    return render.embed_object(result)


@router.post("/api/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbeddingsBody)
    core = convert.embeddings_to_core(body)
    if not core.inputs:
        gateway(request).require_model(core.model)  # 404 if unknown
        return {"embedding": []}
    result = await gateway(request).embed(context(request), core)
    return {"embedding": result.embeddings[0]}


@router.post("/api/copy")
async def copy(request: Request) -> Response:
    body = await parse_body(request, CopyBody)
    if not body.source or not body.destination:
        raise InvalidRequest("source and destination are required")
    gw = gateway(request)
    gw.store.copy(ModelName.parse(gw.resolve_name(body.source)), ModelName.parse(body.destination))
    return Response(status_code=200)


@router.delete("/api/delete")
async def delete(request: Request) -> Response:
    body = await parse_body(request, ModelBody)
    gw = gateway(request)
    name = ModelName.parse(convert.require_model(body.target))
    gw.store.resolve(name)  # 404 before anything changes
    await gw.engine.unload(name.display)
    gw.store.delete(name)
    return Response(status_code=200)
