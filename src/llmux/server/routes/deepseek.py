"""DeepSeek's additions to the OpenAI API: beta completions.

``/beta/chat/completions`` continues a trailing ``prefix: true`` assistant message (the
plain chat route accepts that too); ``/beta/completions`` is fill-in-the-middle with
``suffix``, capped at DeepSeek's 4K ``max_tokens``. The account balance is quotas'
(``routes/quotas.py``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from llmux.protocols.openai.wire import ChatCompletionBody, CompletionBody
from llmux.server.body import parse_body
from llmux.server.deps import context, gateway
from llmux.server.openapi import request_body
from llmux.server.routes.openai import chat_completions
from llmux.server.streaming import respond
from llmux.serving import openai as serving

router = APIRouter()


async def fim_completions(request: Request) -> Response:
    body = await parse_body(request, CompletionBody)
    reply = await serving.fim_completions(gateway(request), context(request), body)
    return respond(reply, request.url.path)


router.add_api_route(
    "/beta/completions",
    fim_completions,
    methods=["POST"],
    openapi_extra=request_body(CompletionBody),
)
router.add_api_route(
    "/beta/chat/completions",
    chat_completions,
    methods=["POST"],
    openapi_extra=request_body(ChatCompletionBody),
)
