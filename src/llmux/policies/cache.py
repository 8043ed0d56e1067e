"""The response cache policy: a repeated chat request is answered from a stored reply.

Innermost in the chain (the backend is next), so limits, moderation and redaction run
for a hit as for any request. For each chat operation (embeddings pass through):

1. **Settings**: ``[cache]``, then the caller's ``keys`` override, then the first
   matching ``models`` override (memoised). Off for them: ``X-Llmux-Cache: bypass``.
2. **Cacheable?** Every request of the operation is reproducible (temperature 0, or a
   seed), or ``only_reproducible = false``, or the request opts in with
   ``Cache-Control: max-age=N`` (N > 0). Else ``bypass``.
3. **Lookup** (skipped with ``no-cache`` or ``max-age=0``): L1, then L2 (an L2 hit
   fills L1). An entry older than the request's ``max-age`` is not used. A hit replays
   the stored chunks: ``hit-l1`` / ``hit-l2``.
4. **Single flight**: an identical miss already running in this process is waited for,
   then replayed (``hit-l1``); if it fails or is cancelled, the waiter goes on itself.
5. **Semantic** (``semantic = true``; ``semantic.py``): the nearest stored prompt worded
   like this one's last user message, in the same partition, that passes the negation
   guard: ``hit-semantic``.
6. **Miss**: the backend answers (``miss``); the reply is stored unless the request said
   ``no-store``, or it did not end well: an error, a cancellation or disconnect, a
   ``load``/``unload`` reply, a choice without its final chunk, an entry over
   ``max_entry_bytes``; the semantic index learns where it is.

A replayed final chunk reports its prompt as cached (``cached_tokens = prompt_tokens``)
and timings of the replay itself; the header tells the outcome meter, which records
the level in the usage ledger (``Outcome.cache``). The key (``cachekey.py``) includes
the tenant, so a hit is always the caller's own entry. Nothing here fails a request: a
value that cannot be keyed, or a store that fails, is a bypass or a miss, logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from llmux.core.chunks import ChatChunk
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest
from llmux.errors import LlmuxError
from llmux.policies import Handler, Operation, Outcome
from llmux.policies.cachekey import LARGE_BYTES, KeyMaker, image_bytes
from llmux.policies.cachestore import Entry, MemoryCache, Recorder, RedisCache, make_entry, replayed
from llmux.policies.meter import CACHE_HEADER
from llmux.policies.semantic import Embed, Probe, Semantic
from llmux.policies.settings import CacheSettings, PerKey

log = logging.getLogger(__name__)
SERVED_BY_S = 1.0  # how long what serves a model is remembered
TOP_ONLY = frozenset({"memory_bytes", "keys", "semantic_entries"})


@dataclass(frozen=True, slots=True)
class Control:
    """The request's Cache-Control directives the cache obeys."""

    no_cache: bool = False  # do not answer from the cache (still store)
    no_store: bool = False  # do not store this reply
    max_age: float | None = None  # an entry at most this old; also opts in

    @classmethod
    def parse(cls, header: str) -> Control:
        """Lenient: unknown directives and malformed values are ignored, as HTTP caches do."""
        if not header:
            return NONE
        no_cache = no_store = False
        max_age: float | None = None
        for part in header.lower().split(","):
            name, _, value = part.strip().partition("=")
            name = name.strip()
            if name == "no-cache":
                no_cache = True
            elif name == "no-store":
                no_store = True
            elif name == "max-age":
                try:
                    max_age = max(0.0, float(int(value.strip().strip('"'))))
                except ValueError:
                    continue
        if max_age == 0:
            no_cache = True
        return cls(no_cache, no_store, max_age)


NONE = Control()


def reproducible(request: ChatRequest) -> bool:
    s = request.sampling
    return s.temperature == 0 or s.seed is not None


class Cache:
    """The policy. ``memory`` and ``redis`` are the two levels (either may be None),
    ``semantic`` the semantic cache's index (None: off); :meth:`bind` gives it what
    serves a model (the gateway's ``served_by``) and the gateway's ``embed``."""

    needs_body = True

    def __init__(
        self,
        settings: CacheSettings,
        memory: MemoryCache | None = None,
        redis: RedisCache | None = None,
        served_by: Callable[[str], str] | None = None,
        semantic: Semantic | None = None,
    ) -> None:
        for name, table in settings.keys.items():
            if TOP_ONLY & set(table):
                raise LlmuxError(
                    f"[cache.keys.{name}]: {', '.join(sorted(TOP_ONLY))} are top-level only"
                )
        self.settings = PerKey(settings)
        self.memory = memory
        self.redis = redis
        self.semantic = semantic
        self.keys = KeyMaker()
        self._served_by = served_by
        self._served: dict[str, tuple[float, str]] = {}
        self._resolved: dict[tuple[int, str], CacheSettings] = {}
        self._flights: dict[str, asyncio.Future[Entry | None]] = {}
        merged = [
            CacheSettings.model_validate({**settings.model_dump(exclude={"keys"}), **table})
            for table in settings.keys.values()
        ]
        for tables in (settings, *merged):
            resolved = [tables, *(with_model(tables, p) for p in tables.models)]
            if any(r.semantic and not r.semantic_model for r in resolved):  # fails at startup
                raise LlmuxError(
                    "[cache] semantic = true needs semantic_model (an embedding model)"
                )

    def bind(self, served_by: Callable[[str], str], embed: Embed | None = None) -> None:
        self._served_by = served_by
        if embed is not None and self.semantic is not None:
            self.semantic.bind(embed)

    # -- settings and the key -----------------------------------------------------------

    def _for_model(self, base: CacheSettings, model: str) -> CacheSettings:
        """``base`` (the top level or a key's, which live as long as the policy) with the
        model's override, memoised."""
        memo = (id(base), model)
        found = self._resolved.get(memo)
        if found is None:
            found = with_model(base, model)
            if len(self._resolved) > 4096:
                self._resolved.clear()
            self._resolved[memo] = found
        return found

    def served(self, model: str) -> str:
        """What serves ``model``, remembered for :data:`SERVED_BY_S`."""
        if self._served_by is None:
            return ""
        now = time.monotonic()
        found = self._served.get(model)
        if found is not None and found[0] > now:
            return found[1]
        value = self._served_by(model)
        if len(self._served) > 4096:
            self._served.clear()
        self._served[model] = (now + SERVED_BY_S, value)
        return value

    async def _key(self, ctx: RequestContext, op: Operation) -> str | None:
        try:
            served = self.served(op.model)
            if image_bytes(op) > LARGE_BYTES:
                return await asyncio.to_thread(self.keys.key, ctx, op, served)
            return self.keys.key(ctx, op, served)
        except Exception as exc:  # noqa: BLE001 - a value that cannot be keyed: bypass
            log.warning("response cache: this request cannot be keyed (%s); bypassed", exc)
            return None

    # -- the chain --------------------------------------------------------------------------

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        if op.kind != "chat" or not op.requests:
            return next(ctx, op)
        settings = self._for_model(self.settings.of(ctx.principal), op.model)
        control = Control.parse(ctx.cache_control)
        opted = control.max_age is not None and control.max_age > 0
        if not settings.enabled or not (
            opted or not settings.only_reproducible or all(map(reproducible, op.requests))
        ):
            ctx.headers[CACHE_HEADER] = "bypass"
            return next(ctx, op)
        return self._serve(ctx, op, next, settings, control)

    async def _serve(
        self,
        ctx: RequestContext,
        op: Operation,
        next: Handler,
        settings: CacheSettings,
        control: Control,
    ) -> AsyncIterator[Any]:
        key = await self._key(ctx, op)
        if key is None:
            ctx.headers[CACHE_HEADER] = "bypass"
            async for item in next(ctx, op):
                yield item
            return
        began = time.perf_counter()
        found = None if control.no_cache else await self._find(key, settings, control)
        if found is not None:
            entry, level = found
            ctx.headers[CACHE_HEADER] = f"hit-{level}"
            for chunk in replayed(entry, began):
                yield chunk
            return
        probe = None
        if settings.semantic and self.semantic is not None:
            probe = await self.semantic.probe(
                ctx, op, self.served(op.model), settings.semantic_model
            )
            hit = None if probe is None else await self._similar(probe, settings, control)
            if hit is not None:
                ctx.headers[CACHE_HEADER] = "hit-semantic"
                for chunk in replayed(hit, began):
                    yield chunk
                return
        ctx.headers[CACHE_HEADER] = "miss"
        async for item in self._compute(ctx, op, next, key, settings, control):
            yield item
        if probe is not None and self.semantic is not None and not control.no_store:
            self.semantic.index.add(probe, key)

    async def _similar(
        self, probe: Probe, settings: CacheSettings, control: Control
    ) -> Entry | None:
        """The stored entry of the nearest prompt the guard lets through; a pointer to a
        reply no longer stored is forgotten."""
        if control.no_cache or self.semantic is None:
            return None
        near = self.semantic.index.nearest(probe, settings.semantic_threshold)
        if near is None:
            return None
        found = await self._lookup(near[0], settings, control.max_age)
        if found is None and control.max_age is None:
            self.semantic.index.drop(probe.partition, near[0])
        return found[0] if found is not None else None

    async def _find(
        self, key: str, settings: CacheSettings, control: Control
    ) -> tuple[Entry, str] | None:
        """A stored entry young enough, or an identical miss's reply once it is done."""
        while True:
            found = await self._lookup(key, settings, control.max_age)
            if found is not None:
                return found
            flight = self._flights.get(key)
            if flight is None or control.no_store:
                return None
            entry = await asyncio.shield(flight)
            if entry is not None:
                return entry, "l1"
            # it failed or was cancelled: look again, then wait for the next or go on

    async def _lookup(
        self, key: str, settings: CacheSettings, max_age: float | None
    ) -> tuple[Entry, str] | None:
        now = time.time()
        if self.memory is not None and settings.memory_ttl_s > 0:
            entry = self.memory.get(key, now)
            if entry is not None and _young(entry, now, max_age):
                return entry, "l1"
        if self.redis is not None and settings.redis:
            entry = await self.redis.get(key)
            if entry is not None and entry.created + settings.redis_ttl_s > now:
                if self.memory is not None and settings.memory_ttl_s > 0:
                    self.memory.put(key, entry, _l1_expiry(entry, now, settings))
                if _young(entry, now, max_age):
                    return entry, "l2"
        return None

    async def _compute(
        self,
        ctx: RequestContext,
        op: Operation,
        next: Handler,
        key: str,
        settings: CacheSettings,
        control: Control,
    ) -> AsyncIterator[Any]:
        """The backend's reply, recorded; stored when it ended well. A request that may
        store leads the single flight while none is running for its key."""
        flight: asyncio.Future[Entry | None] | None = None
        if not control.no_store and key not in self._flights:
            flight = asyncio.get_running_loop().create_future()
            self._flights[key] = flight
        recorder = Recorder(sum(r.n for r in op.requests))
        entry: Entry | None = None
        try:
            async for item in next(ctx, op):
                recorder.see(item)
                yield item
            if recorder.complete:  # shared with the waiters even when too large to store
                entry = _entry(recorder.chunks())
                if entry is not None and not control.no_store:
                    self._store(key, entry, settings)
        finally:
            if flight is not None:
                if self._flights.get(key) is flight:
                    del self._flights[key]
                flight.set_result(entry)

    def _store(self, key: str, entry: Entry, settings: CacheSettings) -> None:
        if entry.size > settings.max_entry_bytes:
            return
        if self.memory is not None and settings.memory_ttl_s > 0:
            self.memory.put(key, entry, entry.created + settings.memory_ttl_s)
        if self.redis is not None and settings.redis:
            self.redis.put(key, entry, settings.redis_ttl_s)

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        return None

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.memory is not None:
            self.memory.clear()
        if self.semantic is not None:
            self.semantic.index.clear()


def with_model(base: CacheSettings, model: str) -> CacheSettings:
    """``base`` with the first ``models`` override that matches ``model`` merged over it."""
    override = base.model_override(model)
    if not override:
        return base
    if {*TOP_ONLY, "models"} & set(override):
        raise LlmuxError(
            f"[cache] models: {', '.join(sorted({*TOP_ONLY, 'models'}))} cannot be set per"
            f" model ({model})"
        )
    try:
        return CacheSettings.model_validate({**base.model_dump(exclude={"keys"}), **override})
    except ValueError as exc:
        raise LlmuxError(f"[cache] models: the override for {model!r} is invalid: {exc}") from None


def _entry(chunks: tuple[ChatChunk, ...]) -> Entry | None:
    try:
        return make_entry(chunks, time.time())
    except (TypeError, ValueError) as exc:
        log.warning("response cache: a reply could not be encoded (%s); not stored", exc)
        return None


def _young(entry: Entry, now: float, max_age: float | None) -> bool:
    return max_age is None or now - entry.created <= max_age


def _l1_expiry(entry: Entry, now: float, settings: CacheSettings) -> float:
    """An entry from Redis stays in memory for memory_ttl_s, but not past its Redis life."""
    return min(now + settings.memory_ttl_s, entry.created + settings.redis_ttl_s)
