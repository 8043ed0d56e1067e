"""The conversations extension: ``/api/conversations`` (see docs/conversations.md)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from llmux.core.chunks import ChatChunk
from llmux.errors import InvalidRequest
from llmux.history import Turn, reply_fields
from llmux.protocols import conversations as wire
from llmux.protocols.ollama import stream as render
from llmux.server.body import parse_body
from llmux.server.deps import context, history
from llmux.server.openapi import request_body
from llmux.server.streaming import respond
from llmux.serving.reply import Reply, ndjson_reply

MAX_OFFSET = 1_000_000_000  # far past any real list; bigger values would overflow SQL
router = APIRouter(prefix="/api/conversations", tags=["conversations"])


@router.post("", status_code=201, openapi_extra=request_body(wire.CreateBody))
async def create(request: Request) -> JSONResponse:
    body = await parse_body(request, wire.CreateBody)
    h = history(request)
    model = h.gateway.resolve_name(body.model) if body.model else ""
    if model:
        h.gateway.require_model(model)  # 404 for an unknown model
    conv = await h.create(
        context(request), title=body.title.strip(), model=model, system=body.system
    )
    return JSONResponse(wire.conversation_object(conv), status_code=201)


@router.get("")
async def find(
    request: Request,
    q: str = "",
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> dict[str, Any]:
    found = await history(request).find(context(request), query=q, limit=limit, offset=offset)
    return {"conversations": [wire.conversation_object(c) for c in found]}


@router.get("/{conversation_id}")
async def get(request: Request, conversation_id: str) -> dict[str, Any]:
    h = history(request)
    conv = await h.conversation(context(request), conversation_id)
    return wire.conversation_object(conv, await h.repo.messages(conversation_id))


@router.patch("/{conversation_id}", openapi_extra=request_body(wire.PatchBody))
async def patch(request: Request, conversation_id: str) -> dict[str, Any]:
    body = await parse_body(request, wire.PatchBody)
    h = history(request)
    await h.conversation(context(request), conversation_id)
    fields = body.model_dump(include={"title", "model", "system"}, exclude_none=True)
    if fields.get("title") is not None:
        fields["title"] = fields["title"].strip()
    if fields.get("model"):
        fields["model"] = h.gateway.resolve_name(fields["model"])
        h.gateway.require_model(fields["model"])
    return wire.conversation_object(await h.repo.update(conversation_id, **fields))


@router.delete("/{conversation_id}", status_code=204)
async def remove(request: Request, conversation_id: str) -> Response:
    h = history(request)
    await h.conversation(context(request), conversation_id)
    await h.repo.delete(conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", openapi_extra=request_body(wire.MessageBody))
async def send(request: Request, conversation_id: str) -> Response:
    body = await parse_body(request, wire.MessageBody)
    turn = await history(request).send(context(request), conversation_id, body)
    return respond(await reply(turn, body.stream), request.url.path)


@router.post(
    "/{conversation_id}/regenerate", openapi_extra=request_body(wire.ReplyBody, required=False)
)
async def regenerate(request: Request, conversation_id: str) -> Response:
    raw = await request.body()
    body = await parse_body(request, wire.ReplyBody) if raw.strip() else wire.ReplyBody()
    turn = await history(request).regenerate(context(request), conversation_id, body)
    return respond(await reply(turn, body.stream), request.url.path)


async def reply(turn: Turn, stream: bool) -> Reply:
    def line(chunk: ChatChunk) -> dict[str, Any]:
        out = render.chat_object(chunk, turn.model)
        if chunk.done:
            out.update(reply_fields(turn))
        return out

    return await ndjson_reply(turn.chunks, line, stream)


@router.get("/{conversation_id}/export")
async def export(request: Request, conversation_id: str, format: str = "markdown") -> Response:
    kind: Literal["markdown", "json"]
    if format in ("markdown", "md"):
        kind = "markdown"
    elif format == "json":
        kind = "json"
    else:
        raise InvalidRequest(
            f"unknown export format {format!r}: use markdown or json", param="format"
        )
    h = history(request)
    conv = await h.conversation(context(request), conversation_id)
    messages = await h.repo.messages(conversation_id)
    if kind == "json":
        text, media, ext = wire.export_json(conv, messages), "application/json", "json"
    else:
        text, media, ext = (
            wire.export_markdown(conv, messages),
            "text/markdown; charset=utf-8",
            "md",
        )
    name = wire.export_filename(conv, ext)
    return Response(
        text, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
