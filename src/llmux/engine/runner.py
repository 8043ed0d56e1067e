"""One loaded GGUF model: a llama.cpp context that lives on its own thread.

llama.cpp contexts are not thread-safe, so every call on a model runs on the model's
single worker thread; the event loop talks to it through :meth:`LoadedModel.generate`,
an async iterator fed from the worker with ``call_soon_threadsafe``. Closing the
iterator (a client went away) sets a flag the worker checks before every token, so
the thread is free again within one decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama
from llama_cpp._internals import LlamaSampler

from llmux.core.chunks import Metrics, TokenLogprob
from llmux.core.request import OutputFormat
from llmux.engine.grammar import grammar_for
from llmux.engine.jsonclose import closing_suffix
from llmux.engine.sampling import build_sampler, token_logprob
from llmux.engine.textstream import StopMatcher, Utf8Stream
from llmux.errors import BackendError, InvalidRequest, LlmuxError

log = logging.getLogger(__name__)

# Prompts are evaluated in chunks of this many tokens aligned to absolute positions,
# and only whole chunks are reused from the prefix cache. llama.cpp's kernels give
# slightly different floats for different batch shapes; with aligned chunks a cached
# prefix holds exactly the values a fresh evaluation would compute, so a greedy or
# seeded request gives the same text whether or not its prefix was cached.
PREFIX_CHUNK = 64


@dataclass(frozen=True, slots=True)
class LoadParams:
    n_ctx: int
    n_threads: int
    n_gpu_layers: int


@dataclass(frozen=True, slots=True)
class ResolvedSampling:
    """Sampling with every default filled in (request > model params > engine)."""

    num_predict: int = -1
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True, slots=True)
class Job:
    prompt: str
    sampling: ResolvedSampling
    format: OutputFormat = None
    context: tuple[int, ...] = ()
    add_bos: bool = True
    return_context: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's only


@dataclass(frozen=True, slots=True)
class TextEvent:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class DoneEvent:
    reason: str
    metrics: Metrics
    context: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    error: BaseException


Event = TextEvent | DoneEvent | ErrorEvent


@dataclass
class LoadedModel:
    name: str
    path: Path
    params: LoadParams
    size: int
    digest: str
    details: dict[str, Any]
    llama: Llama | None = None
    embedder: Llama | None = None
    active: int = 0
    expires_at: float | None = None  # wall-clock seconds; None = never
    last_used: float = field(default_factory=time.monotonic)
    gpu_fraction: float = 0.0  # share of the layers llama.cpp put on a GPU
    _executor: ThreadPoolExecutor = field(init=False)
    _aligned: int = 0  # tokens in the KV cache that were evaluated as whole chunks

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llmux-{self.name}")

    # -- lifecycle -----------------------------------------------------------------
    async def load(self) -> int:
        """Load the weights on the worker thread; returns nanoseconds spent."""
        start = time.perf_counter_ns()
        await self._call(self._load)
        return time.perf_counter_ns() - start

    def _load(self) -> None:
        if self.llama is not None:
            return
        try:
            self.llama = Llama(
                model_path=str(self.path),
                n_ctx=self.params.n_ctx,
                n_threads=self.params.n_threads,
                n_threads_batch=self.params.n_threads,
                n_gpu_layers=self.params.n_gpu_layers,
                n_batch=PREFIX_CHUNK,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"failed to load model '{self.name}': {exc}") from exc
        self.gpu_fraction = gpu_fraction(
            self.params.n_gpu_layers,
            llama_cpp.llama_model_n_layer(self.llama.model),
            supported=bool(llama_cpp.llama_supports_gpu_offload()),
        )

    async def close(self) -> None:
        def _free() -> None:
            for attr in ("llama", "embedder"):
                obj = getattr(self, attr)
                setattr(self, attr, None)
                if obj is not None:
                    obj.close()

        try:
            await self._call(_free)
        finally:
            self._executor.shutdown(wait=False)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- generation ----------------------------------------------------------------
    async def generate(self, job: Job) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        future = loop.run_in_executor(self._executor, self._run, job, emit, cancel)
        try:
            while True:
                event = await queue.get()
                yield event
                if not isinstance(event, TextEvent):
                    return
        finally:
            cancel.set()
            # Wait for the worker so accounting (active, expiry) stays true; shield so a
            # cancelled request still waits the one decode step it takes to stop.
            with contextlib.suppress(BaseException):  # failures were sent as ErrorEvent
                await asyncio.shield(future)

    def _run(self, job: Job, emit: Callable[[Event], None], cancel: threading.Event) -> None:
        try:
            if cancel.is_set():
                return
            emit(self._generate(job, emit, cancel))
        except LlmuxError as exc:
            emit(ErrorEvent(exc))
        except Exception as exc:
            log.exception("generation failed on %s", self.name)
            emit(ErrorEvent(BackendError(f"generation failed: {exc}")))

    def _prompt_tokens(self, llama: Llama, job: Job) -> tuple[list[int], int]:
        """The prompt's tokens, and how many of them the KV cache already holds."""
        n_vocab = llama.n_vocab()
        if any(not 0 <= t < n_vocab for t in job.context):
            raise InvalidRequest(
                f"context holds token ids outside this model's vocabulary (0..{n_vocab - 1})",
                param="context",
            )
        text = job.prompt.encode("utf-8")
        tokens = list(job.context) + llama.tokenize(text, add_bos=job.add_bos, special=True)
        tokens = self._fit_context(
            tokens or [llama.token_bos()], llama.n_ctx(), job.sampling.num_predict
        )
        cached = min(
            _common_prefix(llama.input_ids[: llama.n_tokens], tokens),
            self._aligned,
            len(tokens) - 1,
        )
        return tokens, cached - cached % PREFIX_CHUNK

    def _generate(
        self, job: Job, emit: Callable[[Event], None], cancel: threading.Event
    ) -> DoneEvent:
        llama = self.llama
        if llama is None:
            raise BackendError(f"model '{self.name}' is not loaded")
        t0 = time.perf_counter_ns()
        s = job.sampling
        tokens, cached = self._prompt_tokens(llama, job)
        grammar = grammar_for(job.format)
        sampler = build_sampler(
            llama,
            temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, typical_p=s.typical_p,
            repeat_penalty=s.repeat_penalty, repeat_last_n=s.repeat_last_n if s.repeat_last_n >= 0 else llama.n_ctx(),
            presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty, seed=s.seed,
            grammar=grammar, logit_bias=dict(job.logit_bias),
        )  # fmt: skip
        limit = s.num_predict if s.num_predict >= 0 else math.inf
        if limit == 0:
            return self._done(t0, t0, tokens, cached, [], "length", job)
        # Evaluate the prompt from the cached prefix on, in chunks aligned to PREFIX_CHUNK.
        self._aligned = 0
        llama.n_tokens = cached
        llama.eval(tokens[cached:])
        self._aligned = len(tokens) - len(tokens) % PREFIX_CHUNK
        t_first = time.perf_counter_ns()
        try:
            produced, reason = self._decode(llama, job, sampler, grammar is not None, emit, cancel)
        finally:
            sampler.close()
        return self._done(t0, t_first, tokens, cached, produced, reason, job)

    def _decode(
        self,
        llama: Llama,
        job: Job,
        sampler: LlamaSampler,
        constrained: bool,
        emit: Callable[[Event], None],
        cancel: threading.Event,
    ) -> tuple[list[int], str]:
        """Sample, emit and evaluate tokens until a stop; returns the tokens and why."""
        vocab = llama._model.vocab
        n_ctx = llama.n_ctx()
        utf8, stops = Utf8Stream(), StopMatcher(job.sampling.stop)
        limit = job.sampling.num_predict if job.sampling.num_predict >= 0 else math.inf
        produced: list[int] = []
        emitted: list[str] = []  # kept only under a grammar, to close cut-off JSON
        pending: list[TokenLogprob] = []
        reason = "stop"
        while True:
            if cancel.is_set():
                log.info(
                    "%s: generation cancelled after %d tokens (client went away)",
                    self.name,
                    len(produced),
                )
                break
            token = sampler.sample(llama._ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            if job.top_logprobs is not None:
                pending.append(token_logprob(llama, token, job.top_logprobs))
            produced.append(token)
            text = stops.feed(utf8.feed(llama.detokenize([token])))
            if text:
                emit(TextEvent(text, tuple(pending)))
                pending.clear()
                if constrained:
                    emitted.append(text)
            if stops.stopped:
                break
            if len(produced) >= limit or llama.n_tokens + 1 >= n_ctx:
                reason = "length"
                break
            llama.eval([token])
        tail = stops.feed(utf8.flush()) + stops.flush()
        if constrained and (reason == "length" or stops.stopped):
            tail += closing_suffix("".join(emitted) + tail)
        if tail or pending:
            emit(TextEvent(tail, tuple(pending)))
        return produced, reason

    def _done(
        self,
        t0: int,
        t_first: int,
        tokens: list[int],
        cached: int,
        produced: list[int],
        reason: str,
        job: Job,
    ) -> DoneEvent:
        now = time.perf_counter_ns()
        metrics = Metrics(
            prompt_tokens=len(tokens),
            cached_tokens=cached,
            completion_tokens=len(produced),
            total_ns=now - t0,
            prompt_eval_ns=max(t_first - t0, 1),
            eval_ns=max(now - t_first, 1),
        )
        context = tuple(tokens + produced) if job.return_context else None
        return DoneEvent(reason=reason, metrics=metrics, context=context)

    def _fit_context(self, tokens: list[int], n_ctx: int, num_predict: int) -> list[int]:
        """Keep the newest tokens when a prompt does not fit, leaving room to answer."""
        reserve = min(num_predict if num_predict > 0 else n_ctx // 4, n_ctx // 2)
        room = n_ctx - max(reserve, 1)
        if len(tokens) <= room:
            return tokens
        log.warning(
            "%s: prompt of %d tokens truncated to the last %d (num_ctx=%d)",
            self.name,
            len(tokens),
            room,
            n_ctx,
        )
        return tokens[-room:]

    # -- embeddings --------------------------------------------------------------------
    async def embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int]:
        result: tuple[list[list[float]], int] = await self._call(self._embed, texts, truncate)
        return result

    def _embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int]:
        n = self.params.n_ctx
        if self.embedder is None:
            self.embedder = Llama(
                model_path=str(self.path),
                embedding=True,
                n_ctx=n,
                n_batch=n,
                n_ubatch=n,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_threads=self.params.n_threads,
                n_threads_batch=self.params.n_threads,
                n_gpu_layers=self.params.n_gpu_layers,
                verbose=False,
            )
        emb = self.embedder
        for text in texts:
            count = len(emb.tokenize(text.encode("utf-8"), add_bos=True))
            if count == 0:
                raise InvalidRequest("input must not be empty", param="input")
            if count > n and not truncate:
                raise InvalidRequest(
                    f"input length {count} exceeds the context length {n}; set truncate to true",
                    param="input",
                )
        vectors, count = emb.embed(texts, normalize=False, truncate=True, return_count=True)
        return [list(map(float, v)) for v in vectors], int(count)


def gpu_fraction(n_gpu_layers: int, n_layer: int, *, supported: bool) -> float:
    """Share of a model on the GPU: llama.cpp offloads ``n_gpu_layers`` of its repeating
    layers plus the output layer (-1 means all)."""
    if not supported or n_gpu_layers == 0 or n_layer <= 0:
        return 0.0
    if n_gpu_layers < 0:
        return 1.0
    return min(1.0, n_gpu_layers / (n_layer + 1))


def _common_prefix(a: Any, b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)
