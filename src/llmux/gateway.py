"""The gateway: the one object routes talk to.

It resolves model names (aliases from configuration), runs the policy chain and hands
the request to the backend that serves the model: the embedded engine, or a pool of
upstream servers (plus the engine, when it has the model too) from :mod:`llmux.upstream`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.names import ModelName
from llmux.core.request import ChatRequest, EmbedRequest, RequestContext
from llmux.engine.engine import LocalEngine
from llmux.errors import InvalidRequest
from llmux.models.store import ModelStore
from llmux.policies import Handler, Policy, compose
from llmux.upstream.pool import LocalMember
from llmux.upstream.router import Listed, UpstreamRouter


class Gateway:
    def __init__(
        self,
        store: ModelStore,
        engine: LocalEngine,
        aliases: dict[str, str] | None = None,
        policies: Sequence[Policy] = (),
        upstreams: UpstreamRouter | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        self.policies = tuple(policies)
        self.upstreams = upstreams or UpstreamRouter([])
        self.local = LocalMember(engine)
        self._chat: Handler = compose(policies, self._backend_chat)

    def resolve_name(self, model: str) -> str:
        """The canonical display name for what a client asked for (aliases applied);
        a name an upstream serves stays as configured."""
        target = self.aliases.get(model.strip().lower(), model)
        hit = self.upstreams.lookup(target)
        if hit is not None:
            return hit
        return ModelName.parse(target).display

    def installed_locally(self, name: str) -> bool:
        try:
            return self.store.manifest_path(ModelName.parse(name)).is_file()
        except InvalidRequest:
            return False

    def require_model(self, name: str) -> str:
        """The resolved name, or ModelNotFound when no backend serves it."""
        resolved = self.resolve_name(name)
        if not self.upstreams.targets(resolved):
            self.engine.record(resolved)
        return resolved

    def upstream_models(self) -> list[Listed]:
        return self.upstreams.listed()

    async def start(self) -> None:
        await self.upstreams.start()

    def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        request = dataclasses.replace(request, model=self.resolve_name(request.model))
        return self._chat(ctx, request)

    def _backend_chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        if self.upstreams.targets(request.model):
            local = self.local if self.installed_locally(request.model) else None
            return self.upstreams.pool(request.model, local).chat(request)
        return self.engine.chat(request)

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        request = dataclasses.replace(request, model=self.resolve_name(request.model))
        if self.upstreams.targets(request.model):
            local = self.local if self.installed_locally(request.model) else None
            return await self.upstreams.pool(request.model, local).embed(request)
        return await self.engine.embed(request)

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        await self.engine.aclose()
