"""A model as moderator: ``[moderation] judge_model`` classifies prompts into categories.

The judge is asked through the gateway like any caller (so a local or an upstream model
can judge, PII redaction applies before an upstream judge sees the text, and the cache
may answer a repeated question), with a JSON schema that allows only a list of the
configured categories, at temperature 0. Its context carries :data:`JUDGE_ROUTE`, so the
moderation policy does not judge the judge.

It judges prompts before generation and the texts of ``POST /v1/moderations``, after the
word lists (a listed word needs no model); streamed replies are checked by the lists
alone. A judge that fails (an error, no reply, a reply that is not the JSON asked for)
fails closed: the request is refused with 503 ``policy_failed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from llmux.core.chunks import ChatChunk, collect
from llmux.core.context import INTERNAL, RequestContext
from llmux.core.request import ChatRequest, Message, Sampling
from llmux.errors import LlmuxError, PolicyFailed

log = logging.getLogger(__name__)

JUDGE_ROUTE = INTERNAL + "moderation-judge"
FAILED = (
    "the moderation judge failed, so the request was not served; the server log has the details"
)
Chat = Callable[..., AsyncIterator[ChatChunk]]


class Judge:
    """One judge model with its prompt and categories; :meth:`bind` gives it the
    gateway's ``chat``."""

    def __init__(
        self, model: str, prompt: str, categories: tuple[str, ...], max_chars: int
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.categories = categories
        self.max_chars = max_chars
        self._chat: Chat | None = None
        self.schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                "flagged": {"type": "array", "items": {"type": "string", "enum": list(categories)}}
            },
            "required": ["flagged"],
        }

    def bind(self, chat: Chat) -> None:
        self._chat = chat

    def request(self, text: str) -> ChatRequest:
        """The question for ``text`` (its end, when longer than ``max_chars``)."""
        body = self.prompt.replace("{categories}", ", ".join(self.categories))
        body = body.replace("{text}", text[-self.max_chars :])
        return ChatRequest(
            model=self.model,
            messages=(Message("user", body),),
            format=self.schema,
            sampling=Sampling(temperature=0.0, num_predict=32 + 16 * len(self.categories)),
        )

    async def check(self, ctx: RequestContext, text: str) -> frozenset[str]:
        """The categories the judge finds ``text`` in (fail closed)."""
        if self._chat is None:
            raise PolicyFailed("the moderation judge is not connected to the gateway")
        inner = RequestContext(
            api=ctx.api, route=JUDGE_ROUTE, client=ctx.client, principal=ctx.principal
        )
        try:
            reply = await collect(self._chat(inner, self.request(text), stream=False))
            found = json.loads(reply.content)["flagged"]
            if not isinstance(found, list):
                raise ValueError("`flagged` is not a list")
        except LlmuxError as exc:
            if exc.status in (402, 429):  # the caller's budget or limits: theirs to see
                raise
            log.warning("moderation judge %s failed: %s", self.model, exc.message)
            raise PolicyFailed(FAILED) from None
        except Exception as exc:  # noqa: BLE001 - no JSON verdict, or the backend broke
            log.warning("moderation judge %s gave no verdict: %s", self.model, type(exc).__name__)
            raise PolicyFailed(FAILED) from None
        return frozenset(c for c in found if c in self.categories)
