"""The gateway: the one door to every model operation.

Routes, the serving layer, the conversations API and the relay all come here, with a
:class:`~llmux.core.context.RequestContext`. The gateway

* resolves a requested name (aliases from configuration) and makes the one routing
  decision, :meth:`Gateway.route`: the local backend (the embedded engine), or a pool of
  upstream servers (with the local backend as one more member when it has the model
  too), plus the members the relay fast path may use;
* runs the policy chain (:mod:`llmux.policies`) around chat and embed operations, the
  relay fast path included, and hands every policy the outcome at the end;
* lists, shows, loads and unloads models on the backend that serves them, and manages
  the model store (pull, push, create, copy, delete, blobs) through its
  :class:`~llmux.models.manager.ModelManager`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmux.auth.scopes import model_allowed
from llmux.core.backend import Backend
from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.context import RequestContext
from llmux.core.models import LoadedInfo, ModelCard, ModelInfo
from llmux.core.names import ModelName
from llmux.core.request import ChatRequest, EmbedRequest, LoadOptions
from llmux.errors import (
    BackendError,
    InsufficientScope,
    InvalidRequest,
    LlmuxError,
    ModelNotFound,
)
from llmux.models.create import CreateSpec
from llmux.models.manager import ModelManager
from llmux.models.progress import Progress
from llmux.policies import Handler, Operation, Policy, compose
from llmux.policies.meter import ChunkMeter, Meter, RelayMeter, observed, timed_first
from llmux.upstream import listing
from llmux.upstream.pool import LocalMember, Pool, Target
from llmux.upstream.router import UpstreamRouter
from llmux.upstream.server import Upstream


@dataclass(frozen=True, slots=True)
class Route:
    """Where one model name is served."""

    name: str  # the resolved display name
    backend: Backend  # the local backend, or a pool of upstreams (+ the local one)
    targets: tuple[Target, ...] = ()  # the upstream members, when upstreams serve it

    @property
    def upstream(self) -> bool:
        return bool(self.targets)

    @property
    def kind(self) -> str:
        """What policies see as ``op.backend``: ``pool``, or the local backend's name."""
        return "pool" if self.targets else self.backend.name

    def fast(self, api: str) -> list[Target]:
        """Members the relay may pass bytes to unparsed: every member is an upstream that
        speaks ``api`` and allows the fast path, and no local copy takes part. Their own
        model names may differ from the exposed one: the relay rewrites that field."""
        if not self.targets or (isinstance(self.backend, Pool) and self.backend.local):
            return []
        ok = all(
            isinstance(m, Upstream) and m.type == api and m.settings.fast_path
            for m, _ in self.targets
        )
        return list(self.targets) if ok else []


class Gateway:
    def __init__(
        self,
        local: Backend,
        *,
        manager: ModelManager | None = None,
        upstreams: UpstreamRouter | None = None,
        aliases: dict[str, str] | None = None,
        policies: Sequence[Policy] = (),
        digest: Callable[[str], str] | None = None,
    ) -> None:
        self.local = local
        self.digest = digest  # the local backend's model digest (the engine's), if it has one
        self.manager = manager
        self.upstreams = upstreams or UpstreamRouter([])
        self.aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        self.policies = tuple(policies)
        self.needs_bodies = any(p.needs_body for p in self.policies)
        self._member = LocalMember(local)
        self._chain: Handler = compose(self.policies, self._backend)

    # -- names and routing ------------------------------------------------------------

    def resolve_name(self, model: str) -> str:
        """The canonical display name for what a client asked for (aliases applied);
        a name an upstream serves stays as configured."""
        target = self.aliases.get(model.strip().lower(), model)
        hit = self.upstreams.lookup(target)
        if hit is not None:
            return hit
        return ModelName.parse(target).display

    def route(self, model: str) -> Route:
        """The one local-or-upstream decision, for every operation."""
        name = self.resolve_name(model)
        targets = self.upstreams.targets(name)
        if not targets:
            return Route(name, self.local)
        local = self._member if self.local.has(name) else None
        return Route(name, self.upstreams.pool(name, local), tuple(targets))

    def allowed(self, ctx: RequestContext, model: str) -> Route:
        """:meth:`route`, after checking that the caller may use the model: a credential
        limited to model patterns gets 403 for any other (by the name asked for or the
        name it resolves to)."""
        route = self.route(model)
        self.check(ctx, model, route.name)
        return route

    @staticmethod
    def check(ctx: RequestContext, *names: str) -> None:
        patterns = ctx.principal.models
        if patterns and not any(model_allowed(patterns, n) for n in names):
            raise InsufficientScope(
                "models",
                f"this credential may not use the model {names[-1]!r}; it may use "
                f"{', '.join(patterns)}",
            )

    def visible(self, ctx: RequestContext, name: str) -> bool:
        return model_allowed(ctx.principal.models, name)

    def served_by(self, model: str) -> str:
        """What answers a resolved name, for the response cache's key: the local model's
        digest, or each upstream and the name it knows the model by (and the local digest
        where the local copy is a pool member). Unknown models give the route only."""
        route = self.route(model)
        local = ""
        if not route.upstream or (isinstance(route.backend, Pool) and route.backend.local):
            try:
                local = self.digest(route.name) if self.digest is not None else ""
            except LlmuxError:
                local = ""
            local = f"{self.local.name}:{route.name}@{local}"
        members = sorted(f"{m.name}={remote}" for m, remote in route.targets)
        return "|".join([route.kind, local, *members])

    def serves(self, name: str) -> bool:
        """Whether a backend serves a resolved name (an upstream, or an installed model)."""
        return self.route(name).upstream or self.local.has(name)

    def require_model(self, model: str) -> str:
        """The resolved name, or ModelNotFound when no backend serves it."""
        route = self.route(model)
        if not route.upstream and not self.local.has(route.name):
            raise ModelNotFound(route.name, hint="`llmux list` shows the installed models")
        return route.name

    # -- generation (through the policy chain) -------------------------------------------

    def chat(
        self, ctx: RequestContext, request: ChatRequest, *more: ChatRequest, stream: bool = True
    ) -> AsyncIterator[ChatChunk]:
        """One chat/generate/completion operation; ``more`` are further prompts of the
        same completions request (their chunks' ``index`` continues after the first's)."""
        route = self.allowed(ctx, request.model)
        ctx.facts["model"] = request.model  # as asked for (the audit trail)
        requests = tuple(dataclasses.replace(r, model=route.name) for r in (request, *more))
        op = Operation("chat", route.name, stream=stream, backend=route.kind, requests=requests)
        return self._run(ctx, op, ChunkMeter(request.n))

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        route = self.allowed(ctx, request.model)
        ctx.facts["model"] = request.model
        request = dataclasses.replace(request, model=route.name)
        op = Operation("embed", route.name, backend=route.kind, embed=request)
        result: EmbedResult | None = None
        async for item in self._run(ctx, op, ChunkMeter()):
            result = item  # read to the end, so the policies see the outcome
        if result is None:
            raise BackendError("the backend returned no embeddings")
        return result

    def relay(
        self,
        ctx: RequestContext,
        name: str,
        stream: bool,
        source: AsyncIterator[bytes],
        *,
        body_size: int = 0,
        max_output: int | None = None,
        choices: int = 1,
    ) -> AsyncIterator[bytes]:
        """The relay fast path's bytes, through the chain (metadata policies only: the
        fast path is off while any policy needs bodies). The body's length, output cap
        and ``n`` let quotas bound what the request may use without parsing it."""
        self.check(ctx, name)
        op = Operation(
            "chat", name, stream=stream, backend="relay",
            body_size=body_size, max_output=max_output, choices=choices,
        )  # fmt: skip

        def handler(ctx: RequestContext, op: Operation) -> AsyncIterator[Any]:
            return timed_first(ctx, source)

        return self._run(ctx, op, RelayMeter(), compose(self.policies, handler))

    def _run(
        self, ctx: RequestContext, op: Operation, meter: Meter, chain: Handler | None = None
    ) -> AsyncIterator[Any]:
        items = (chain or self._chain)(ctx, op)
        if not self.policies:
            return items
        return observed(ctx, op, items, self.policies, meter)

    def _backend(self, ctx: RequestContext, op: Operation) -> AsyncIterator[Any]:
        return timed_first(ctx, self._backend_call(ctx, op))

    def _backend_call(self, ctx: RequestContext, op: Operation) -> AsyncIterator[Any]:
        backend = self.route(op.model).backend
        if op.kind == "embed":
            assert op.embed is not None
            return _one(backend.embed(ctx, op.embed))
        if len(op.requests) == 1:
            if not op.stream and isinstance(backend, Pool):
                return backend.chat_whole(ctx, op.requests[0])  # may fail over part-way
            return backend.chat(ctx, op.requests[0])
        return _merged(backend, ctx, op.requests)

    # -- models ---------------------------------------------------------------------------

    def models(self, ctx: RequestContext, *, aliases: bool = False) -> list[ModelInfo]:
        """Installed models first, then upstream models not shadowed by them, then (with
        ``aliases``) each configured alias under its own name."""
        out = self.local.models()
        taken = {m.name for m in out}
        for item in self.upstreams.listed():
            if item.name not in taken:
                taken.add(item.name)
                out.append(listing.model_info(item))
        if aliases:
            oldest = min((m.modified_at for m in out), default=listing.EPOCH)
            out += [ModelInfo(name=a, modified_at=oldest, owned_by="llmux") for a in self.aliases]
        if ctx.principal.models:  # a credential sees only the models it may use
            out = [m for m in out if self.visible(ctx, m.name)]
        return out

    def model(self, ctx: RequestContext, model_id: str) -> ModelInfo:
        """One model, as ``GET /v1/models/{id}`` shows it: an alias or an installed model
        under the id asked for, an upstream model under its exposed name."""
        if model_id.strip().lower() in self.aliases:
            return next(m for m in self.models(ctx, aliases=True) if m.name == model_id.lower())
        route = self.allowed(ctx, model_id)
        listed = {m.name: m for m in self.models(ctx)}
        found = listed.get(self.require_model(model_id))
        if found is None:
            raise ModelNotFound(model_id)
        return found if route.upstream else dataclasses.replace(found, name=model_id)

    async def show(self, ctx: RequestContext, model: str, verbose: bool = False) -> ModelCard:
        route = self.allowed(ctx, model)
        return await route.backend.show(route.name, verbose)

    async def load(
        self, ctx: RequestContext, model: str, keep_alive: float | None, load: LoadOptions
    ) -> int:
        route = self.allowed(ctx, model)
        return await route.backend.load(route.name, keep_alive, load)

    async def unload(self, ctx: RequestContext, model: str) -> None:
        route = self.allowed(ctx, model)
        await route.backend.unload(route.name)

    def ps(self, ctx: RequestContext) -> list[LoadedInfo]:
        return [m for m in self.local.loaded() if self.visible(ctx, m.name)]

    def upstream_snapshot(self, ctx: RequestContext) -> list[dict[str, Any]]:
        return self.upstreams.snapshot()

    # -- the model store --------------------------------------------------------------------

    @property
    def _models(self) -> ModelManager:
        if self.manager is None:
            raise InvalidRequest("this server has no model store")
        return self.manager

    def pull(
        self, ctx: RequestContext, model: str, insecure: bool = False
    ) -> AsyncGenerator[Progress, None]:
        self.check(ctx, model)
        return self._models.pull(model, insecure)

    def push(
        self, ctx: RequestContext, model: str, insecure: bool = False
    ) -> AsyncGenerator[Progress, None]:
        self.check(ctx, model)
        return self._models.push(model, insecure)

    def create(self, ctx: RequestContext, spec: CreateSpec) -> AsyncGenerator[Progress, None]:
        self.check(ctx, spec.model)
        if spec.from_:
            self.check(ctx, spec.from_)
        return self._models.create(spec)

    def copy(self, ctx: RequestContext, source: str, destination: str) -> None:
        self.check(ctx, source)
        self.check(ctx, destination)
        self._models.copy(self.resolve_name(source), destination)

    async def delete(self, ctx: RequestContext, model: str) -> None:
        self.check(ctx, model)
        name = self._models.check_installed(model)  # 404 before anything changes
        await self.local.unload(name.display)
        self._models.delete(name)

    def has_blob(self, ctx: RequestContext, digest: str) -> bool:
        return self._models.has_blob(digest)

    async def put_blob(
        self, ctx: RequestContext, digest: str, chunks: AsyncIterator[bytes]
    ) -> bool:
        return await self._models.put_blob(digest, chunks)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.local.start()
        await self.upstreams.start()

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        await self.local.aclose()


async def _one(result: Any) -> AsyncIterator[Any]:
    yield await result


async def _merged(
    backend: Backend, ctx: RequestContext, requests: tuple[ChatRequest, ...]
) -> AsyncIterator[ChatChunk]:
    """Several prompts one after another, their choices numbered on."""
    for i, request in enumerate(requests):
        async for chunk in backend.chat(ctx, request):
            yield dataclasses.replace(chunk, index=i * request.n + chunk.index)
