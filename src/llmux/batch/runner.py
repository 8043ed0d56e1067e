"""One batch line's request, run through the same serving functions as an HTTP request
to its endpoint: the gateway's policies (quotas, usage, cache, redaction, moderation,
audit, metrics) apply, with the batch's owner as the principal. Lines ask for the whole
reply at once: a line's ``stream: true`` is ignored (there is no client to stream to)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmux.core.context import RequestContext
from llmux.errors import BackendError, InvalidRequest
from llmux.gateway import Gateway
from llmux.policies.moderation import Moderation
from llmux.protocols.body import validate
from llmux.protocols.openai.wire import (
    ChatCompletionBody,
    CompletionBody,
    EmbeddingBody,
    ModerationBody,
)
from llmux.serving import moderations
from llmux.serving import openai as serving
from llmux.serving.reply import Reply

WHOLE = {"stream": False, "stream_options": None}


class LineRunner:
    def __init__(
        self,
        gateway: Gateway,
        moderation: Moderation,
        reasoning_fields: Sequence[str] = ("reasoning_content",),
    ) -> None:
        self.gateway = gateway
        self.moderation = moderation
        self.reasoning_fields = tuple(reasoning_fields)

    async def run(self, ctx: RequestContext, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """The reply's body (a 200); a failure raises its LlmuxError."""
        gw = self.gateway
        if endpoint == "/v1/chat/completions":
            chat = validate(ChatCompletionBody, body).model_copy(update=WHOLE)
            return _whole(await serving.chat_completions(gw, ctx, chat, self.reasoning_fields))
        if endpoint == "/v1/completions":
            completion = validate(CompletionBody, body).model_copy(update=WHOLE)
            return _whole(await serving.completions(gw, ctx, completion))
        if endpoint == "/v1/embeddings":
            return await serving.embeddings(gw, ctx, validate(EmbeddingBody, body))
        if endpoint == "/v1/moderations":
            _, moderator = self.moderation.settings(ctx.principal)
            return await moderations.moderate(ctx, moderator, validate(ModerationBody, body))
        raise InvalidRequest(f"the Batch API does not run {endpoint!r}", param="endpoint")


def _whole(reply: Reply) -> dict[str, Any]:
    if reply.framing != "json" or not isinstance(reply.body, dict):
        raise BackendError("the reply to a batch line was not one JSON object")
    return reply.body
