"""The scheduler in-process, on the bundled model: queue deadlines, cancelled waiters,
prefix reuse across slots, embedding calls gathered into shared passes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import llama_cpp
import pytest
from llama_cpp._internals import LlamaContext, LlamaModel

from llmux.engine.batch import PREFIX_CHUNK, BatchLoop, Request
from llmux.engine.jobs import (
    DoneEvent,
    ErrorEvent,
    Event,
    Job,
    LoadParams,
    ResolvedSampling,
    TextEvent,
)
from llmux.engine.runner import Embedder
from llmux.errors import Timeout
from llmux.models.bundled import bundled_gguf

pytestmark = pytest.mark.model


def make_loop(n_slots: int, flash_attn: bool = True) -> BatchLoop:
    path = bundled_gguf()
    assert path is not None
    model = LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False)  # fmt: skip
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = 1024 * n_slots, n_slots, False
    params.n_batch, params.n_ubatch = 512, PREFIX_CHUNK
    params.n_threads = params.n_threads_batch = 2
    if not flash_attn:
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    return BatchLoop("test", model, LlamaContext(model=model, params=params, verbose=False), n_slots, 1024)  # fmt: skip


@pytest.fixture()
def one_slot() -> Iterator[BatchLoop]:
    loop = make_loop(1)
    yield loop
    loop.close()


@dataclass
class Reply:
    text: str = ""
    end: Event | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Event) -> None:
        if isinstance(event, TextEvent):
            self.text += event.text
        else:
            self.end = event
            self.done.set()


def submit(loop: BatchLoop, prompt: str, num_predict: int, deadline: float | None = None, background: bool = False) -> Reply:  # fmt: skip
    """Greedy, with end tokens banned, so the reply has ``num_predict`` tokens."""
    reply = Reply()
    ends = {loop.model.token_eos(), *loop.model.tokenize(b"<|im_end|>", False, True)}
    job = Job(
        prompt=prompt,
        sampling=ResolvedSampling(num_predict=num_predict, temperature=0),
        logit_bias=tuple((t, -100.0) for t in ends),
        deadline=deadline,
        background=background,
    )
    loop.submit(Request(job, reply.emit, reply.cancel))
    return reply


def test_a_queued_request_past_its_deadline_gets_a_timeout(one_slot: BatchLoop) -> None:
    busy = submit(one_slot, "Write a long story.", 150)
    late = submit(one_slot, "hi", 5, deadline=time.monotonic() + 0.3)
    assert late.done.wait(60)
    assert isinstance(late.end, ErrorEvent) and isinstance(late.end.error, Timeout)
    assert not busy.done.is_set(), "the deadline was answered while the slot was still busy"
    assert busy.done.wait(120) and isinstance(busy.end, DoneEvent)


def test_a_cancelled_waiter_never_runs(one_slot: BatchLoop) -> None:
    busy = submit(one_slot, "Write a long story.", 60)
    gone = submit(one_slot, "hi", 5)
    gone.cancel.set()
    after = submit(one_slot, "hello", 3)
    assert busy.done.wait(120) and after.done.wait(120)
    assert not gone.done.is_set() and gone.text == ""


def test_prefix_is_copied_from_a_busy_slot() -> None:
    loop = make_loop(2)
    try:
        system = "You are a helpful tutor. Explain every idea simply. " * 20
        first = submit(loop, system + "Write a long essay about rivers.", 120)
        deadline = time.monotonic() + 120
        while not first.text and time.monotonic() < deadline:
            time.sleep(0.02)  # once it streams, its prompt is in its slot's cache
        assert first.text and not first.done.is_set()
        second = submit(loop, system + "What is 2 + 2?", 5)
        assert second.done.wait(120) and isinstance(second.end, DoneEvent)
        metrics = second.end.metrics
        assert metrics.cached_tokens >= 3 * PREFIX_CHUNK
        assert metrics.cached_tokens % PREFIX_CHUNK == 0
        assert first.done.wait(120)
    finally:
        loop.close()


def test_concurrent_embedding_calls_share_passes() -> None:
    path = bundled_gguf()
    assert path is not None
    embedder = Embedder("test", path, LoadParams(n_ctx=512, n_threads=2, n_gpu_layers=0))
    texts = [["the cat sat"], ["a dog ran", "birds fly"], ["rain again"], ["sun"]]

    async def run() -> tuple[list[tuple[list[list[float]], int]], list[tuple[list[list[float]], int]]]:  # fmt: skip
        solo = [await embedder.embed(t, truncate=True) for t in texts]
        passes = embedder.passes
        together = await asyncio.gather(*(embedder.embed(t, truncate=True) for t in texts))
        assert embedder.passes - passes <= 2, "concurrent calls were not gathered"
        await embedder.close()
        return solo, list(together)

    solo, together = asyncio.run(run())
    for (a, n_a), (b, n_b) in zip(solo, together, strict=True):
        assert n_a == n_b and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert max(abs(p - q) for p, q in zip(x, y, strict=True)) < 1e-3
