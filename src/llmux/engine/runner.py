"""One loaded GGUF model: its weights, a batched llama.cpp context and an embedder.

Generation goes through the model's :class:`~llmux.engine.batch.BatchLoop`, which
decodes every running request together on its own thread; :meth:`LoadedModel.generate`
is the async bridge to it (events come back with ``call_soon_threadsafe``; leaving the
iterator early cancels the request, freeing its slot within one decode step).
Embeddings run on a second context on their own thread; requests that arrive while one
pass runs are gathered into the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama
from llama_cpp._internals import LlamaContext, LlamaModel

from llmux.engine.batch import BATCH_TOKENS, PREFIX_CHUNK, BatchLoop, Request
from llmux.engine.jobs import Event, Job, LoadParams, TextEvent
from llmux.errors import BackendError, InvalidRequest, LlmuxError
from llmux.observability.logs import plain_stderr

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    path: Path
    params: LoadParams
    size: int
    digest: str
    details: dict[str, Any]
    active: int = 0
    expires_at: float | None = None  # wall-clock seconds; None = never
    last_used: float = field(default_factory=time.monotonic)
    gpu_fraction: float = 0.0  # share of the layers llama.cpp put on a GPU
    batch: BatchLoop | None = None
    embedder: Embedder = field(init=False)
    _outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        self.embedder = Embedder(self.name, self.path, self.params)
        self._outbox = Outbox()

    # -- lifecycle -----------------------------------------------------------------
    async def load(self) -> int:
        """Load the weights and start the scheduler; returns nanoseconds spent."""
        start = time.perf_counter_ns()
        await asyncio.to_thread(self._load)
        return time.perf_counter_ns() - start

    def _load(self) -> None:
        quiet_llama_cpp()
        p = self.params
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = p.n_gpu_layers
        try:
            model = LlamaModel(path_model=str(self.path), params=mparams, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"failed to load model '{self.name}': {exc}") from exc
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = p.n_ctx * p.n_slots
        cparams.n_batch = BATCH_TOKENS
        cparams.n_ubatch = PREFIX_CHUNK
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if p.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.n_seq_max = p.n_slots
        cparams.kv_unified = False  # one stream of cells per slot
        cparams.n_threads = cparams.n_threads_batch = p.n_threads
        cparams.no_perf = True
        try:
            ctx = LlamaContext(model=model, params=cparams, verbose=False)
        except (ValueError, RuntimeError) as exc:
            model.close()
            raise BackendError(
                f"failed to create a context for '{self.name}' "
                f"(num_ctx={p.n_ctx} x {p.n_slots} slots): {exc}"
            ) from exc
        self.gpu_fraction = gpu_fraction(
            p.n_gpu_layers,
            llama_cpp.llama_model_n_layer(model.model),
            supported=bool(llama_cpp.llama_supports_gpu_offload()),
        )
        self.batch = BatchLoop(
            self.name, model, ctx, p.n_slots, p.n_ctx, after_step=self._outbox.flush
        )

    async def close(self) -> None:
        batch, self.batch = self.batch, None
        if batch is not None:
            await asyncio.to_thread(batch.close)
        await self.embedder.close()

    # -- generation ----------------------------------------------------------------
    async def generate(self, job: Job) -> AsyncIterator[Event]:
        batch = self.batch
        if batch is None:
            raise BackendError(f"model '{self.name}' is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        cancel = threading.Event()
        outbox = self._outbox

        def emit(event: Event) -> None:
            outbox.put(loop, queue, event)

        batch.submit(Request(job, emit, cancel))
        try:
            while True:
                event = await queue.get()
                yield event
                if not isinstance(event, TextEvent):
                    return
        finally:
            cancel.set()  # a no-op once the reply is done; else frees the slot

    # -- embeddings --------------------------------------------------------------------
    async def embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int]:
        return await self.embedder.embed(texts, truncate)


class Outbox:
    """Events from the scheduler thread to the event loops waiting for them.

    The scheduler emits one event per sequence per step; they are gathered here and
    handed over once per step (one ``call_soon_threadsafe`` per event loop), so the
    event loop wakes once per step, not once per token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event], Event]] = []

    def put(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event], event: Event
    ) -> None:
        with self._lock:
            self._items.append((loop, queue, event))

    def flush(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
        for loop, queue, event in items:
            by_loop.setdefault(loop, []).append((queue, event))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that event loop is closed: shutting down
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue[Event], Event]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


@dataclass(eq=False)
class _EmbedCall:
    texts: list[str]
    truncate: bool
    future: asyncio.Future[tuple[list[list[float]], int]]


class Embedder:
    """Embeddings on a context of their own (mean pooling), loaded on first use.

    Calls that arrive while a pass runs wait for the next pass and share it: one
    ``llama_decode`` batch serves several clients."""

    def __init__(self, name: str, path: Path, params: LoadParams) -> None:
        self.name = name
        self.path = path
        self.params = params
        self._llama: Llama | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llmux-emb-{name}")
        self._pending: list[_EmbedCall] = []
        self._drain_task: asyncio.Task[None] | None = None
        self.passes = 0  # embedding passes run; several calls can share one

    async def embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int]:
        loop = asyncio.get_running_loop()
        call = _EmbedCall(texts, truncate, loop.create_future())
        self._pending.append(call)
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain(), name=f"llmux-embed-{self.name}")
        return await call.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            calls, self._pending = self._pending, []
            self.passes += 1
            try:
                results = await loop.run_in_executor(self._executor, self._run, calls)
            except Exception as exc:
                log.exception("embedding pass failed on %s", self.name)
                results = [BackendError(f"embedding failed: {exc}")] * len(calls)
            for call, result in zip(calls, results, strict=True):
                if call.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    call.future.set_exception(result)
                else:
                    call.future.set_result(result)

    def _run(self, calls: list[_EmbedCall]) -> list[tuple[list[list[float]], int] | LlmuxError]:
        emb = self._embedder()
        n = self.params.n_ctx
        plans: list[tuple[int, int] | LlmuxError] = []  # (texts, tokens) per call
        texts: list[str] = []
        for call in calls:
            try:
                used = [self._count(emb, text, n, call.truncate) for text in call.texts]
            except LlmuxError as exc:
                plans.append(exc)
                continue
            plans.append((len(call.texts), sum(used)))
            texts.extend(call.texts)
        vectors = iter(emb.embed(texts, normalize=False, truncate=True) if texts else [])
        results: list[tuple[list[list[float]], int] | LlmuxError] = []
        for plan in plans:
            if isinstance(plan, LlmuxError):
                results.append(plan)
                continue
            n_texts, tokens = plan
            results.append(([[float(x) for x in next(vectors)] for _ in range(n_texts)], tokens))
        return results

    @staticmethod
    def _count(emb: Llama, text: str, n: int, truncate: bool) -> int:
        count = len(emb.tokenize(text.encode("utf-8"), add_bos=True))
        if count == 0:
            raise InvalidRequest("input must not be empty", param="input")
        if count > n and not truncate:
            raise InvalidRequest(
                f"input length {count} exceeds the context length {n}; set truncate to true",
                param="input",
            )
        return min(count, n)

    def _embedder(self) -> Llama:
        if self._llama is None:
            n = self.params.n_ctx
            self._llama = Llama(
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
        return self._llama

    async def close(self) -> None:
        def _free() -> None:
            llama, self._llama = self._llama, None
            if llama is not None:
                llama.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, _free)
        finally:
            self._executor.shutdown(wait=False)


def gpu_fraction(n_gpu_layers: int, n_layer: int, *, supported: bool) -> float:
    """Share of a model on the GPU: llama.cpp offloads ``n_gpu_layers`` of its repeating
    layers plus the output layer (-1 means all)."""
    if not supported or n_gpu_layers == 0 or n_layer <= 0:
        return 0.0
    if n_gpu_layers < 0:
        return 1.0
    return min(1.0, n_gpu_layers / (n_layer + 1))


def quiet_llama_cpp() -> None:
    """llama.cpp's own log lines go to stderr unless llmux runs at debug level (and
    writes text: they would break JSON logs, one object per line)."""
    ours = logging.getLogger("llmux")
    debug = ours.getEffectiveLevel() <= logging.DEBUG and plain_stderr()
    level = logging.DEBUG if debug else logging.ERROR
    logging.getLogger("llama-cpp-python").setLevel(level)


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)
