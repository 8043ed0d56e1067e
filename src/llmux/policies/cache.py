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
5. **Miss**: the backend answers (``miss``); the reply is stored unless the request said
   ``no-store``, or it did not end well: an error, a cancellation or disconnect, a
   ``load``/``unload`` reply, a choice without its final chunk, an entry over
   ``max_entry_bytes``.

A replayed final chunk reports its prompt as cached (``cached_tokens = prompt_tokens``)
and timings of the replay itself; the header tells the outcome meter, which records
the level in the usage ledger (``Outcome.cache``). The key (``cachekey.py``) includes
the tenant, so a hit is always the caller's own entry. Nothing here fails a request: a
value that cannot be keyed, or a store that fails, is a bypass or a miss, logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from llmux.policies.cachestore import Entry, MemoryCache, RedisCache, make_entry
from llmux.policies.meter import CACHE_HEADER
from llmux.policies.settings import CacheSettings, PerKey

log = logging.getLogger(__name__)
PIECE_CHARS = 256  # stored content pieces are coalesced up to this length
SERVED_BY_S = 1.0  # how long what serves a model is remembered
NOT_STORED = frozenset({"load", "unload"})


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


class Recorder:
    """The chunks of a reply as they stream, content pieces coalesced (a run of pieces
    is joined into one chunk when it ends), and whether it ended as one that may be
    stored."""

    def __init__(self, choices: int) -> None:
        self.choices = choices
        self._chunks: list[ChatChunk] = []
        self._run: list[ChatChunk] = []
        self._run_chars = 0
        self.finals = 0
        self.storable = True

    def see(self, item: Any) -> None:
        if not isinstance(item, ChatChunk):
            self.storable = False
            return
        if item.done:
            self.finals += 1
            if item.done_reason in NOT_STORED:
                self.storable = False
        run = self._run
        if run and not (self._run_chars < PIECE_CHARS and _joinable(run[-1], item)):
            self._end_run()
        run.append(item)
        self._run_chars += len(item.content) + len(item.thinking)

    def _end_run(self) -> None:
        run = self._run
        if len(run) == 1:
            self._chunks.append(run[0])
        elif run:
            self._chunks.append(
                dataclasses.replace(
                    run[0],
                    content="".join(c.content for c in run),
                    thinking="".join(c.thinking for c in run),
                    logprobs=tuple(p for c in run for p in c.logprobs),
                )
            )
        run.clear()
        self._run_chars = 0

    @property
    def complete(self) -> bool:
        return self.storable and self.finals == self.choices

    def chunks(self) -> tuple[ChatChunk, ...]:
        self._end_run()
        return tuple(self._chunks)


def _joinable(a: ChatChunk, b: ChatChunk) -> bool:
    """Two pieces of the same kind (content or thinking) of one choice, neither final."""
    if a.done or b.done or a.tool_calls or b.tool_calls or a.index != b.index:
        return False
    if a.model != b.model or a.context is not None or b.context is not None:
        return False
    return (not a.thinking and not b.thinking) or (not a.content and not b.content)


def replayed(entry: Entry, began: float) -> tuple[ChatChunk, ...]:
    """The stored chunks with each final one's prompt reported as cached and the
    replay's own time as its timings."""
    spent = max(1, int((time.perf_counter() - began) * 1e9))
    out = []
    for c in entry.chunks:
        if c.done and c.metrics is not None:
            m = dataclasses.replace(
                c.metrics, cached_tokens=c.metrics.prompt_tokens,
                total_ns=spent, load_ns=0, prompt_eval_ns=0, eval_ns=spent,
            )  # fmt: skip
            c = dataclasses.replace(c, metrics=m)
        out.append(c)
    return tuple(out)


class Cache:
    """The policy. ``memory`` and ``redis`` are the two levels (either may be None);
    :meth:`bind` gives it what serves a model (the gateway's ``served_by``)."""

    needs_body = True

    def __init__(
        self,
        settings: CacheSettings,
        memory: MemoryCache | None = None,
        redis: RedisCache | None = None,
        served_by: Callable[[str], str] | None = None,
    ) -> None:
        for name, table in settings.keys.items():
            if {"memory_bytes", "keys"} & set(table):
                raise LlmuxError(f"[cache.keys.{name}]: memory_bytes and keys are top-level only")
        self.settings = PerKey(settings)
        self.memory = memory
        self.redis = redis
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
            for pattern in tables.models:
                with_model(tables, pattern)  # a bad model override fails at startup

    def bind(self, served_by: Callable[[str], str]) -> None:
        self._served_by = served_by

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
        ctx.headers[CACHE_HEADER] = "miss"
        async for item in self._compute(ctx, op, next, key, settings, control):
            yield item

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


def with_model(base: CacheSettings, model: str) -> CacheSettings:
    """``base`` with the first ``models`` override that matches ``model`` merged over it."""
    override = base.model_override(model)
    if not override:
        return base
    if {"memory_bytes", "keys", "models"} & set(override):
        raise LlmuxError(
            f"[cache] models: memory_bytes, keys and models cannot be set per model ({model})"
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
