"""The embedded llama.cpp backend.

Owns the loaded models: loads lazily on first use, keeps each for its ``keep_alive``
(Ollama's semantics: a duration, negative = forever, 0 = unload after the reply),
evicts the least recently used idle model past ``max_loaded_models``, and refuses
work past ``max_queue`` waiting for one model (per model: its slots plus its queue) with
503. Prompts are built here from the model's template,
system and parameter layers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from typing import Any

from llmux.config import EngineSettings
from llmux.core.chunks import ChatChunk, DoneReason, EmbedResult
from llmux.core.context import RequestContext
from llmux.core.models import LoadedInfo, ModelCard, ModelInfo
from llmux.core.names import ModelName
from llmux.core.postprocess import shape
from llmux.core.request import ChatRequest, EmbedRequest, LoadOptions, Sampling
from llmux.engine.batch import MAX_SLOTS, BatchLoop
from llmux.engine.jobs import (
    NEUTRAL,
    OLLAMA_DEFAULTS,
    PENALTIES,
    ErrorEvent,
    Job,
    LoadParams,
    ResolvedSampling,
    TextEvent,
)
from llmux.engine.prompt import PromptBuilder
from llmux.engine.runner import LoadedModel, default_threads
from llmux.errors import CapabilityNotSupported, InvalidRequest, ServerBusy
from llmux.models.capabilities import capabilities
from llmux.models.card import model_card
from llmux.models.store import ModelRecord, ModelStore
from llmux.observability.logs import BODIES
from llmux.observability.stats import EngineStats

log = logging.getLogger(__name__)
bodies = logging.getLogger(BODIES + ".engine")  # rendered prompts, with log_bodies
PROMPT_LOG_CHARS = 4000  # what a debug log line shows of a rendered prompt (its end)

REAP_INTERVAL_S = 0.25
AUTO_SLOTS = 8  # the most sequence slots num_parallel "auto" gives a model


class LocalEngine:
    """The engine as a :class:`~llmux.core.backend.Backend`: every installed model."""

    name = "local"

    def __init__(self, store: ModelStore, settings: EngineSettings) -> None:
        self.store = store
        self.settings = settings
        self.default_keep_alive = settings.keep_alive_seconds
        self._loaded: dict[str, LoadedModel] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self.prompts = PromptBuilder(store)
        self._pending: dict[str, int] = {}  # requests in flight per model, running or queued
        self._reaper: asyncio.Task[None] | None = None
        self.stats = EngineStats()  # loads and evictions, for the metrics registry

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="llmux-keepalive")

    async def aclose(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for name in list(self._loaded):
            await self._unload(name)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.time()
            for name, model in list(self._loaded.items()):
                if model.active == 0 and model.expires_at is not None and model.expires_at <= now:
                    log.info("unloading %s (keep_alive expired)", name)
                    await self._unload(name)

    # -- model records -------------------------------------------------------------
    def record(self, model: str) -> ModelRecord:
        return self.store.resolve(ModelName.parse(model))

    def digest(self, model: str) -> str:
        """The installed model's manifest digest (one stat while it is unchanged); the
        response cache keys replies by it, so a re-pulled model misses."""
        return self.record(model).digest

    def has(self, model: str) -> bool:
        try:
            return self.store.exists(ModelName.parse(model))
        except InvalidRequest:
            return False

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=r.name.display,
                modified_at=r.modified_at,
                size=r.size,
                digest=r.digest,
                details=r.details(),
                owned_by=r.name.namespace,
            )
            for r in self.store.installed()
        ]

    async def show(self, model: str, verbose: bool = False) -> ModelCard:
        record = self.record(model)
        rendered = await asyncio.to_thread(self.prompts.source, record)
        return await asyncio.to_thread(model_card, self.store, record, verbose, rendered)

    def capabilities(self, record: ModelRecord) -> list[str]:
        """From the template prompts render from (see ``PromptBuilder.source``)."""
        return capabilities(self.store.gguf(record), self.prompts.source(record))

    def check(self, record: ModelRecord, request: ChatRequest) -> None:
        """Refuse what the model can't do, before anything is loaded or streamed."""
        caps = self.capabilities(record)
        full = record.name.full
        if "completion" not in caps:
            raise CapabilityNotSupported(f"{full} does not support generate")
        if request.tools and request.tool_choice is None and "tools" not in caps:
            raise CapabilityNotSupported(f"{full} does not support tools", param="tools")
        if request.suffix and "insert" not in caps:
            raise CapabilityNotSupported(f"{full} does not support insert", param="suffix")
        if request.all_images and "vision" not in caps:
            raise CapabilityNotSupported(f"{full} does not support vision", param="images")
        if request.think not in (None, False) and "thinking" not in caps:
            raise CapabilityNotSupported(
                f'"{record.name.display}" does not support thinking', param="think"
            )

    # -- loading ----------------------------------------------------------------------
    def _load_params(self, record: ModelRecord, load: LoadOptions) -> LoadParams:
        info = self.store.gguf(record)
        trained = info.context_length or self.settings.num_ctx
        params = record.params
        n_ctx = max(
            64, min(int(load.num_ctx or params.get("num_ctx") or self.settings.num_ctx), trained)
        )
        return LoadParams(
            n_ctx=n_ctx,
            # a request can't ask for more threads than make sense on this machine
            n_threads=min(
                load.num_thread or self.settings.num_thread or default_threads(),
                4 * default_threads(),
            ),
            n_gpu_layers=load.num_gpu if load.num_gpu is not None else self.settings.num_gpu,
            n_slots=self._slots(record, info.kv_bytes_per_token * n_ctx),
            flash_attn=self.settings.flash_attention,
        )  # fmt: skip

    def _slots(self, record: ModelRecord, kv_bytes_per_slot: int) -> int:
        """Sequence slots for a model: the ``parallel`` table, else ``num_parallel``, else
        as many as fit ``kv_budget_mib`` of KV cache, from 1 to ``AUTO_SLOTS``."""
        for name in (record.name.display, record.name.full):
            if name in self.settings.parallel:
                return max(1, min(self.settings.parallel[name], MAX_SLOTS))
        if self.settings.num_parallel:
            return self.settings.num_parallel
        budget = self.settings.kv_budget_mib * 2**20
        return max(1, min(AUTO_SLOTS, budget // max(kv_bytes_per_slot, 1)))

    async def acquire(self, record: ModelRecord, load: LoadOptions) -> tuple[LoadedModel, int]:
        """The loaded model for a record (loading it if needed) and the ns spent loading."""
        name = record.name.display
        params = self._load_params(record, load)
        lock = self._load_locks.setdefault(name, asyncio.Lock())
        async with lock:
            model = self._loaded.get(name)
            if (
                model
                and (model.params != params or model.digest != record.digest)
                and model.active == 0
            ):
                await self._unload(name)
                model = None
            if model is not None:
                model.active += 1
                return model, 0
            await self._evict_for_room()
            model = LoadedModel(
                name=name,
                path=record.model_path,
                params=params,
                size=record.size,
                digest=record.digest,
                details=record.details(),
            )
            model.active += 1
            try:
                load_ns = await model.load()
            except BaseException:
                await model.close()
                raise
            self._loaded[name] = model
            self.stats.loaded(name, load_ns / 1e9)
            log.info(
                "loaded %s (num_ctx=%d, threads=%d) in %.2fs",
                name,
                params.n_ctx,
                params.n_threads,
                load_ns / 1e9,
            )
            return model, load_ns

    def release(self, model: LoadedModel, keep_alive: float | None) -> None:
        model.active -= 1
        model.last_used = time.monotonic()
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        model.expires_at = None if math.isinf(seconds) else time.time() + seconds

    async def _evict_for_room(self) -> None:
        while len(self._loaded) >= self.settings.max_loaded_models:
            idle = [m for m in self._loaded.values() if m.active == 0]
            if not idle:
                log.warning("all %d loaded models are busy; loading one more", len(self._loaded))
                return
            victim = min(idle, key=lambda m: m.last_used)
            log.info("unloading %s to make room", victim.name)
            self.stats.evicted(victim.name)
            await self._unload(victim.name)

    async def _unload(self, name: str) -> None:
        model = self._loaded.pop(name, None)
        if model is not None:
            await model.close()

    async def load(self, model: str, keep_alive: float | None, load: LoadOptions) -> int:
        record = self.record(model)
        loaded, load_ns = await self.acquire(record, load)
        self.release(loaded, keep_alive)
        return load_ns

    async def unload(self, model: str) -> None:
        name = ModelName.parse(model).display
        loaded = self._loaded.get(name)
        if loaded is None:
            self.record(model)  # 404 for unknown models
            return
        if loaded.active:
            loaded.expires_at = time.time()  # the reaper unloads it once idle
        else:
            await self._unload(name)

    def loaded(self) -> list[LoadedInfo]:
        return [
            LoadedInfo(
                m.name,
                m.size,
                m.digest,
                m.details,
                m.expires_at,
                m.params.n_ctx,
                size_vram=int(m.size * m.gpu_fraction),
            )
            for m in sorted(self._loaded.values(), key=lambda m: -m.last_used)
        ]

    def schedulers(self) -> list[tuple[str, BatchLoop, int]]:
        """Each loaded model's scheduler and its requests admitted but not running
        (queued, or waiting for the model to load), for the metrics registry."""
        out = []
        for name, model in list(self._loaded.items()):
            batch = model.batch
            if batch is not None:
                out.append((name, batch, max(0, self._pending.get(name, 0) - batch.running)))
        return out

    # -- admission -------------------------------------------------------------------
    def _admit(self, record: ModelRecord, load: LoadOptions) -> str:
        """Count a request against its model: past the model's slots plus ``max_queue``
        waiting, 503. Other models' slots and queues don't count. Returns the key to
        hand back to :meth:`_leave`."""
        name = record.name.display
        loaded = self._loaded.get(name)
        slots = loaded.params.n_slots if loaded else self._load_params(record, load).n_slots
        pending = self._pending.get(name, 0)
        if pending >= self.settings.max_queue + slots:
            raise ServerBusy("server busy, please try again. maximum pending requests exceeded")
        self._pending[name] = pending + 1
        return name

    def _leave(self, name: str) -> None:
        left = self._pending.get(name, 0) - 1
        if left > 0:
            self._pending[name] = left
        else:
            self._pending.pop(name, None)

    # -- generation --------------------------------------------------------------------
    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        record = self.record(request.model)
        self.check(record, request)
        prompt = await asyncio.to_thread(self.prompts.build, record, request)  # templates
        if bodies.isEnabledFor(logging.DEBUG):  # only with [server] log_bodies; scrubbed
            bodies.debug("%s: prompt %s", record.name.display, prompt.text[-PROMPT_LOG_CHARS:])
        job = Job(
            prompt=prompt.text,
            sampling=resolve_sampling(
                request.sampling, record.params, constrained=prompt.format is not None
            ),
            format=prompt.format,
            context=request.context,
            add_bos=prompt.add_bos,
            return_context=prompt.return_context,
            logit_bias=self._logit_bias(record, request),
            top_logprobs=request.top_logprobs,
            deadline=self._deadline(),
            background=ctx.priority == "batch",
        )
        raw = self._generate(record, request, job)
        shaped = shape(
            raw,
            reasoning=prompt.reasoning,
            thinking_first=prompt.thinking_first,
            hide_thinking=prompt.hide_thinking,
            tools=prompt.tools,
            forced_tools=prompt.forced_tools,
        )
        async for chunk in shaped:
            yield chunk

    async def count_prompt(self, request: ChatRequest) -> int:
        """The request's prompt tokens, as :meth:`chat` would evaluate them: exact with
        the model's tokenizer once it is loaded, else the rendered prompt's UTF-8 length
        (never less than its token count). Quotas reserve this before the request."""
        record = self.record(request.model)
        loaded = self._loaded.get(record.name.display)
        batch = loaded.batch if loaded is not None else None

        def count() -> int:
            prompt = self.prompts.build(record, request)
            text = prompt.text.encode()
            if batch is None:
                return len(text) + 1
            return len(batch.model.tokenize(text, add_bos=prompt.add_bos, special=True))

        return len(request.context) + await asyncio.to_thread(count)

    async def _generate(
        self, record: ModelRecord, request: ChatRequest, job: Job
    ) -> AsyncIterator[ChatChunk]:
        """Raw text chunks for each of the ``n`` choices, one after another."""
        name = self._admit(record, request.load)
        try:
            model, load_ns = await self.acquire(record, request.load)
            try:
                for index in range(request.n):
                    seed = job.sampling.seed
                    choice_job = (
                        job
                        if index == 0 or seed is None
                        else replace(job, sampling=replace(job.sampling, seed=seed + index))
                    )
                    async for event in model.generate(choice_job):
                        if isinstance(event, TextEvent):
                            yield ChatChunk(
                                content=event.text, logprobs=event.logprobs, model=name, index=index
                            )
                        elif isinstance(event, ErrorEvent):
                            raise event.error
                        else:
                            m = event.metrics
                            metrics = replace(m, load_ns=load_ns, total_ns=m.total_ns + load_ns)
                            reason: DoneReason = "length" if event.reason == "length" else "stop"
                            yield ChatChunk(
                                done=True,
                                done_reason=reason,
                                metrics=metrics,
                                context=event.context,
                                model=name,
                                index=index,
                            )
                    load_ns = 0
            finally:
                self.release(model, request.keep_alive)
        finally:
            self._leave(name)

    def _deadline(self) -> float | None:
        timeout = self.settings.request_timeout
        return None if timeout is None else time.monotonic() + timeout

    def _logit_bias(
        self, record: ModelRecord, request: ChatRequest
    ) -> tuple[tuple[int, float], ...]:
        n_vocab = len(self.store.gguf(record).tokens)
        for token, _ in request.logit_bias:
            if n_vocab and not 0 <= token < n_vocab:
                raise InvalidRequest(
                    f"logit_bias: token id {token} is outside the vocabulary (0..{n_vocab - 1})",
                    param="logit_bias",
                )
        return request.logit_bias

    # -- embeddings ---------------------------------------------------------------------
    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        record = self.record(request.model)
        start = time.perf_counter_ns()
        name = self._admit(record, request.load)
        try:
            model, load_ns = await self.acquire(record, request.load)
            try:
                vectors, count = (
                    await model.embed(list(request.inputs), request.truncate)
                    if request.inputs
                    else ([], 0)
                )
            finally:
                self.release(model, request.keep_alive)
        finally:
            self._leave(name)
        vectors = [shape_embedding(v, request.dimensions, request.normalize) for v in vectors]
        return EmbedResult(
            model=record.name.display,
            embeddings=vectors,
            prompt_tokens=count,
            total_ns=time.perf_counter_ns() - start,
            load_ns=load_ns,
        )


def resolve_sampling(
    request: Sampling, params: dict[str, Any], *, constrained: bool = False
) -> ResolvedSampling:
    """Request values win over the model's parameter layer, which wins over the API's
    defaults (``request.defaults``). Under a grammar (``constrained``: a format or a
    forced tool call) repetition penalties apply only when the request sets them: a
    penalty on the tokens JSON repeats by nature (quotes, commas) can keep a string
    from ever closing."""
    base = NEUTRAL if request.defaults == "neutral" else OLLAMA_DEFAULTS
    values: dict[str, Any] = {}
    for f in fields(ResolvedSampling):
        requested = getattr(request, f.name)
        if f.name == "stop":
            stop = requested or params.get("stop") or ()
            values["stop"] = tuple([stop] if isinstance(stop, str) else stop)
        elif requested is not None:
            values[f.name] = requested
        elif constrained and f.name in PENALTIES:
            values[f.name] = getattr(NEUTRAL, f.name)
        elif params.get(f.name) is not None:
            values[f.name] = params[f.name]
        else:
            values[f.name] = getattr(base, f.name)
    return ResolvedSampling(**values)


def shape_embedding(vector: list[float], dimensions: int | None, normalize: bool) -> list[float]:
    if dimensions is not None:
        if dimensions <= 0 or dimensions > len(vector):
            raise InvalidRequest(
                f"dimensions must be between 1 and {len(vector)}", param="dimensions"
            )
        vector = vector[:dimensions]
    if normalize:
        norm = math.sqrt(sum(x * x for x in vector))
        if norm > 0:
            vector = [x / norm for x in vector]
    return vector
