"""The gateway: the one object routes talk to.

It resolves model names (aliases from configuration), runs the policy chain and hands
the request to the backend that serves the model. Today that is always the embedded
engine; upstream servers plug in here as further backends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.names import ModelName
from llmux.core.request import ChatRequest, EmbedRequest, RequestContext
from llmux.engine.engine import LocalEngine
from llmux.models.store import ModelStore
from llmux.policies import Handler, Policy, compose


class Gateway:
    def __init__(
        self,
        store: ModelStore,
        engine: LocalEngine,
        aliases: dict[str, str] | None = None,
        policies: Sequence[Policy] = (),
    ) -> None:
        self.store = store
        self.engine = engine
        self.aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        self._chat: Handler = compose(policies, self._backend_chat)

    def resolve_name(self, model: str) -> str:
        """The canonical display name for what a client asked for (aliases applied)."""
        target = self.aliases.get(model.strip().lower(), model)
        return ModelName.parse(target).display

    def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        request = dataclasses.replace(request, model=self.resolve_name(request.model))
        return self._chat(ctx, request)

    def _backend_chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self.engine.chat(request)

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        request = dataclasses.replace(request, model=self.resolve_name(request.model))
        return await self.engine.embed(request)

    async def aclose(self) -> None:
        await self.engine.aclose()
