"""DeepSeek's additions to the OpenAI API: beta completions and the account balance.

``/beta/chat/completions`` continues a trailing ``prefix: true`` assistant message (the
plain chat route accepts that too); ``/beta/completions`` is fill-in-the-middle with
``suffix``, capped at DeepSeek's 4K ``max_tokens``. The balance comes from configuration
until budgets exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from llmux.protocols.openai.wire import ChatCompletionBody, CompletionBody
from llmux.server.body import parse_body
from llmux.server.deps import context, gateway, settings
from llmux.server.openapi import request_body
from llmux.server.routes.openai import chat_completions
from llmux.server.streaming import respond
from llmux.serving import openai as serving

router = APIRouter()


async def fim_completions(request: Request) -> Response:
    body = await parse_body(request, CompletionBody)
    reply = await serving.fim_completions(gateway(request), context(request), body)
    return respond(reply, request.url.path)


async def balance(request: Request) -> dict[str, Any]:
    s = settings(request).server
    return {
        "is_available": True,
        "balance_infos": [
            {
                "currency": s.balance_currency,
                "total_balance": s.balance_total,
                "granted_balance": "0.00",
                "topped_up_balance": s.balance_total,
            }
        ],
    }


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
router.add_api_route("/user/balance", balance, methods=["GET"])
