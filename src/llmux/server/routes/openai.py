"""The OpenAI API under ``/v1``, and at the bare root as DeepSeek clients call it.
Parse, serve, respond; DeepSeek's own additions are in ``deepseek.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from llmux.protocols.openai.wire import (
    ChatCompletionBody,
    CompletionBody,
    EmbeddingBody,
    ModerationBody,
)
from llmux.server.body import parse_body
from llmux.server.deps import context, gateway, services, settings
from llmux.server.openapi import request_body
from llmux.server.streaming import respond
from llmux.serving import moderations
from llmux.serving import openai as serving

router = APIRouter()


async def chat_completions(request: Request) -> Response:
    body = await parse_body(request, ChatCompletionBody)
    fields = settings(request).server.reasoning_fields
    reply = await serving.chat_completions(gateway(request), context(request), body, fields)
    return respond(reply, request.url.path)


async def completions(request: Request) -> Response:
    body = await parse_body(request, CompletionBody)
    reply = await serving.completions(gateway(request), context(request), body)
    return respond(reply, request.url.path)


async def embeddings(request: Request) -> dict[str, Any]:
    body = await parse_body(request, EmbeddingBody)
    return await serving.embeddings(gateway(request), context(request), body)


async def moderate(request: Request) -> dict[str, Any]:
    body = await parse_body(request, ModerationBody)
    ctx = context(request)
    _, moderator = services(request).moderation.settings(ctx.principal)
    return await moderations.moderate(ctx, moderator, body)


async def list_models(request: Request) -> dict[str, Any]:
    return serving.list_models(gateway(request), context(request))


async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    return serving.get_model(gateway(request), context(request), model_id)


for prefix in ("/v1", ""):
    chat_body = request_body(ChatCompletionBody)
    completion_body = request_body(CompletionBody)
    router.add_api_route(
        prefix + "/chat/completions", chat_completions, methods=["POST"], openapi_extra=chat_body
    )
    router.add_api_route(
        prefix + "/completions", completions, methods=["POST"], openapi_extra=completion_body
    )
    # the path tutorials for DeepSeek-style APIs use; the same as /completions
    router.add_api_route(
        prefix + "/text/completion", completions, methods=["POST"], openapi_extra=completion_body
    )
    router.add_api_route(
        prefix + "/embeddings",
        embeddings,
        methods=["POST"],
        openapi_extra=request_body(EmbeddingBody),
    )
    for path in ("/moderations", "/moderation"):  # the second: the path tutorials use
        router.add_api_route(
            prefix + path, moderate, methods=["POST"], openapi_extra=request_body(ModerationBody)
        )
    router.add_api_route(prefix + "/models", list_models, methods=["GET"])
    router.add_api_route(prefix + "/models/{model_id:path}", get_model, methods=["GET"])
