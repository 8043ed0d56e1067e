"""Pools: every backend that serves one model name, and how a request picks among them.

* **Load balancing**: least outstanding requests, weighted: the member with the lowest
  ``(outstanding + 1) / weight`` goes first; ties are broken at random.
* **Retries**: per failure kind (429, 500, 502, 503, 504, connect) with jittered
  backoff, ``Retry-After`` honoured, never past the request's deadline. A 504 or a
  first-byte timeout retries with a longer first-byte timeout.
* **Failover**: with members left, a connect error, timeout or 5xx before the first
  chunk moves on at once (a 429 spends its retries first); the retries of the other
  kinds are spent on the last member. Nothing is retried once a chunk has been handed
  on, so output is never duplicated.
* **Breakers** skip open members; **health checks** put unhealthy members last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from llmux.core.backend import Backend
from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.context import RequestContext
from llmux.core.models import LoadedInfo, ModelCard, ModelInfo
from llmux.core.request import ChatRequest, EmbedRequest, LoadOptions
from llmux.errors import LlmuxError, RateLimited, ServerBusy, Timeout, UpstreamError
from llmux.observability.stats import UpstreamStats
from llmux.upstream import listing
from llmux.upstream.breaker import CircuitBreaker
from llmux.upstream.http import AttemptFailed
from llmux.upstream.listing import Listed
from llmux.upstream.retry import backoff, fits
from llmux.upstream.server import Upstream
from llmux.upstream.settings import RetryRule

log = logging.getLogger(__name__)


class Member(Protocol):
    name: str
    weight: float
    outstanding: int
    healthy: bool
    breaker: CircuitBreaker | None
    retry: dict[str, RetryRule]
    stats: UpstreamStats
    timeout_s: float
    first_byte_timeout_s: float | None

    def chat(
        self, ctx: RequestContext, request: ChatRequest, model: str, deadline: float
    ) -> AsyncIterator[ChatChunk]: ...

    async def embed(
        self, ctx: RequestContext, request: EmbedRequest, model: str, deadline: float
    ) -> EmbedResult: ...


class LocalMember:
    """The local backend as a pool member: no breaker, no retries of its own."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.weight = 1.0
        self.outstanding = 0
        self.healthy = True
        self.breaker: CircuitBreaker | None = None
        self.retry: dict[str, RetryRule] = {}
        self.stats = UpstreamStats()
        self.timeout_s = 24 * 3600.0
        self.first_byte_timeout_s: float | None = None

    async def chat(
        self, ctx: RequestContext, request: ChatRequest, model: str, deadline: float
    ) -> AsyncIterator[ChatChunk]:
        async for chunk in self.backend.chat(ctx, dataclasses.replace(request, model=model)):
            yield chunk

    async def embed(
        self, ctx: RequestContext, request: EmbedRequest, model: str, deadline: float
    ) -> EmbedResult:
        return await self.backend.embed(ctx, dataclasses.replace(request, model=model))


Target = tuple[Member, str]  # a member and the model name it knows
T = TypeVar("T")
Starter = Callable[[Member, str, float], AsyncIterator[T]]  # (member, model, deadline)


def order(targets: Sequence[Target]) -> list[Target]:
    """Available members by weighted least-outstanding; unhealthy ones last."""
    ready = [t for t in targets if t[0].breaker is None or t[0].breaker.available()]
    keyed = [
        (not m.healthy, (m.outstanding + 1) / m.weight, random.random(), i)
        for i, (m, _) in enumerate(ready)
    ]
    keyed.sort()
    return [ready[k[3]] for k in keyed]


def as_failure(member: Member, exc: BaseException) -> AttemptFailed:
    """Anything that stopped an attempt before its first chunk, as an AttemptFailed."""
    if isinstance(exc, AttemptFailed):
        return exc
    if isinstance(exc, TimeoutError):
        return AttemptFailed(
            member.name, "timeout", f"upstream '{member.name}' sent nothing in time"
        )
    if isinstance(exc, StopAsyncIteration):
        return AttemptFailed(
            member.name, "protocol", f"upstream '{member.name}' sent no output", status=502
        )
    assert isinstance(exc, LlmuxError)
    if exc.status >= 500 and not isinstance(exc, Timeout):
        return AttemptFailed(member.name, "protocol", exc.message, status=502)
    if isinstance(exc, Timeout):
        return AttemptFailed(member.name, "timeout", exc.message)
    return AttemptFailed(member.name, "status", exc.message, status=exc.status, final=exc)


def failure_kind(failed: AttemptFailed) -> str:
    """A failure's metric label: ``connect``, ``timeout``, ``protocol``, ``status_4xx``..."""
    if failed.kind == "status" and failed.status is not None:
        return f"status_{failed.status // 100}xx"
    return failed.kind


def final_error(model: str, last: AttemptFailed | None, skipped: list[Member]) -> LlmuxError:
    if last is None:
        wait = min(
            (m.breaker.settings.open_s for m in skipped if m.breaker is not None), default=1.0
        )
        names = ", ".join(m.name for m in skipped) or "none"
        return UpstreamError(
            f"no upstream for '{model}' is available (circuit open: {names}); try again later",
            retry_after=wait,
        )
    if last.kind == "timeout":
        return Timeout(
            f"{last.message} for '{model}'; raise first_byte_timeout_s / timeout_s in its"
            " [[upstreams]] table if the model is just slow"
        )
    if last.status == 429:
        return RateLimited(f"{last.message} (after retries)", retry_after=last.retry_after or 1.0)
    if last.status == 503:  # passed on with its status and Retry-After, after the retries
        return ServerBusy(f"{last.message} (after retries)", retry_after=last.retry_after or 1.0)
    return UpstreamError(last.message)


def _starter(ctx: RequestContext, request: ChatRequest) -> Starter[ChatChunk]:
    """Start a chat on a member; the last one tried (the one that answers) goes into
    ``ctx.facts["upstream"]`` for the request's log, trace and audit record."""

    def start(member: Member, model: str, deadline: float) -> AsyncIterator[ChatChunk]:
        ctx.facts["upstream"] = member.name
        return member.chat(ctx, request, model, deadline)

    return start


class Pool:
    """The members serving one exposed model name: a :class:`~llmux.core.backend.Backend`
    for that name (the gateway makes one per request from the router's targets)."""

    def __init__(self, name: str, targets: list[Target], local: LocalMember | None = None) -> None:
        self.name = name
        self.targets = targets + ([(local, name)] if local is not None else [])
        self.local = local

    def has(self, model: str) -> bool:
        return model == self.name

    async def _attempt(
        self, member: Member, model: str, start: Starter[T], deadline: float, factor: float
    ) -> tuple[AsyncIterator[T], T]:
        member.outstanding += 1
        stream = start(member, model, deadline)
        limit = deadline - time.monotonic()
        if member.first_byte_timeout_s is not None:
            limit = min(limit, member.first_byte_timeout_s * factor)
        try:
            async with asyncio.timeout(limit):
                first = await anext(stream)
        except BaseException as exc:
            member.outstanding -= 1
            await stream.aclose()  # type: ignore[attr-defined]
            if isinstance(exc, (AttemptFailed, TimeoutError, StopAsyncIteration, LlmuxError)):
                raise as_failure(member, exc) from None
            raise
        return stream, first

    async def open(
        self, start: Starter[T], exclude: Sequence[Member] = ()
    ) -> tuple[Member, AsyncIterator[T], T]:
        """The first item from the first member that gives one; ``start`` begins a
        stream on a member. The caller decrements ``member.outstanding`` at its end."""
        began = time.monotonic()
        targets = [t for t in order(self.targets) if t[0] not in exclude]
        skipped = [m for m, name in self.targets if (m, name) not in targets and m not in exclude]
        deadline = began + max((m.timeout_s for m, _ in self.targets), default=600.0)
        last: AttemptFailed | None = None
        for pos, (member, model) in enumerate(targets):
            more = pos < len(targets) - 1
            member_deadline = min(deadline, began + member.timeout_s)
            attempt, factor = 0, 1.0
            while True:
                if member.breaker is not None and not member.breaker.allow():
                    skipped.append(member)
                    break
                try:
                    stream, first = await self._attempt(
                        member, model, start, member_deadline, factor
                    )
                except AttemptFailed as failed:
                    member.stats.failed(failure_kind(failed))
                    if member.breaker is not None and failed.final is None:
                        member.breaker.record(failed.counts_against_breaker)
                    if failed.final is not None:
                        raise failed.final from None
                    last = failed
                    log.info("%s (attempt %d)", failed.message, attempt + 1)
                    rule = member.retry.get(failed.rule)
                    if rule is None or attempt >= rule.retries or (more and failed.rule != "429"):
                        member.stats.failovers += more
                        break
                    delay = backoff(rule, attempt, failed.retry_after)
                    if not fits(delay, time.monotonic(), member_deadline):
                        member.stats.failovers += more
                        break
                    await asyncio.sleep(delay)
                    member.stats.retries += 1
                    attempt += 1
                    factor *= rule.timeout_factor
                    continue
                if member.breaker is not None:
                    member.breaker.record(False)
                return member, stream, first
        raise final_error(self.name, last, skipped)

    async def stream(self, start: Starter[T]) -> AsyncIterator[T]:
        """Everything from the first member that gives a first item (see :meth:`open`)."""
        began = time.perf_counter()
        member, stream, first = await self.open(start)
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            member.outstanding -= 1
            member.stats.latency.observe(time.perf_counter() - began)
            await stream.aclose()  # type: ignore[attr-defined]

    async def whole(self, start: Starter[T]) -> list[T]:
        """Every item of one reply, for a client that waits for all of it: a member that
        fails part-way is given up and the next one asked from the start, since nothing
        has reached the client yet."""
        failed: list[Member] = []
        while True:
            began = time.perf_counter()
            member, stream, first = await self.open(start, exclude=failed)
            items = [first]
            try:
                async for item in stream:
                    items.append(item)
                member.stats.latency.observe(time.perf_counter() - began)
                return items
            except (UpstreamError, Timeout) as exc:
                member.stats.failed("broken_off")
                if member.breaker is not None:
                    member.breaker.record(True)
                failed.append(member)
                if all(m in failed for m, _ in self.targets):
                    raise
                member.stats.failovers += 1
                log.info("%s broke off part-way (%s); asking the next member", member.name, exc)
            finally:
                member.outstanding -= 1
                await stream.aclose()  # type: ignore[attr-defined]

    def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self.stream(_starter(ctx, request))

    async def chat_whole(
        self, ctx: RequestContext, request: ChatRequest
    ) -> AsyncIterator[ChatChunk]:
        """:meth:`chat` for a non-streaming client (see :meth:`whole`)."""
        for chunk in await self.whole(_starter(ctx, request)):
            yield chunk

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        """Retried, failed over and broken like :meth:`chat` (the result is the one item)."""

        async def one(m: Member, model: str, deadline: float) -> AsyncIterator[EmbedResult]:
            yield await m.embed(ctx, request, model, deadline)

        results = self.stream(one)
        try:
            return await anext(results)
        finally:
            await results.aclose()  # type: ignore[attr-defined]

    # -- the rest of the Backend seam -----------------------------------------------

    def _upstreams(self) -> list[tuple[Upstream, str]]:
        return [(m, remote) for m, remote in self.targets if isinstance(m, Upstream)]

    def models(self) -> list[ModelInfo]:
        return [
            listing.model_info(Listed(self.name, up, remote)) for up, remote in self._upstreams()
        ]

    async def show(self, model: str, verbose: bool = False) -> ModelCard:
        """A local copy's card; else the first Ollama-type upstream's own ``/api/show``;
        else a summary (OpenAI-type upstreams have no such call)."""
        if self.local is not None:
            return await self.local.backend.show(model, verbose)
        ups = self._upstreams()
        for up, remote in ups:
            if up.type == "ollama":
                shown: dict[str, Any] = await up.show(remote)
                shown.setdefault("details", {})["upstream"] = up.name
                return ModelCard(name=self.name, modified_at=listing.EPOCH, raw=shown)
        return listing.card(Listed(self.name, *ups[0]))

    async def load(self, model: str, keep_alive: float | None, load: LoadOptions) -> int:
        """Loads the local copy, if there is one; upstreams load on their own."""
        if self.local is None:
            return 0
        return await self.local.backend.load(model, keep_alive, load)

    async def unload(self, model: str) -> None:
        if self.local is not None:
            await self.local.backend.unload(model)

    def loaded(self) -> list[LoadedInfo]:
        return []

    async def start(self) -> None:
        return None  # the members belong to the router

    async def aclose(self) -> None:
        return None
