"""What the metrics add, against the same code with metrics off, in the same run:

* the gateway: CPU µs per operation with the metrics policy in the chain (a 20-piece
  reply and an embedding), and µs per streamed piece (a 400-piece reply);
* HTTP, in process: p50 and p99 of a non-streaming /api/chat over a fake instant
  backend, through the whole app (identity, HTTP metrics, boundary, routes), with
  ``[metrics] enabled`` on and off, alternating rounds;
* a scrape: ms to render /metrics with 100 models' series and 4 upstreams.

    .venv/bin/python bench/metrics.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.guardrails import Backend
from llmux.config import Settings
from llmux.core.chunks import EmbedResult
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest, EmbedRequest, Message
from llmux.gateway import Gateway
from llmux.policies import Policy
from llmux.services import build_metrics
from tests.support.fakes import FakeBackend
from tests.support.inprocess import in_process


class Embedder(Backend):
    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        return EmbedResult(request.model, [[0.0] * 8], total_ns=1, load_ns=0, prompt_tokens=3)


def recorder() -> Policy:
    found = build_metrics(Settings())
    assert found is not None
    found.labels.served = lambda name: True
    return found


async def per_op(policies: list[Policy], pieces: int, n: int, embed: bool = False) -> float:
    gateway = Gateway(Embedder([f" w{i}" for i in range(pieces)]), policies=policies)
    req = ChatRequest(model="m", messages=(Message("user", "hi"),))

    async def once() -> None:
        ctx = RequestContext(api="openai", route="/v1/chat/completions")
        if embed:
            await gateway.embed(ctx, EmbedRequest("m", ("x",)))
            return
        chunks: AsyncIterator[object] = gateway.chat(ctx, req)
        async for _ in chunks:
            pass

    for _ in range(50):
        await once()
    began = time.process_time()
    for _ in range(n):
        await once()
    return (time.process_time() - began) / n * 1e6


def http_latencies(on: bool, n: int, home: Path) -> list[float]:
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    with in_process(home, backend=FakeBackend(), observe=on) as app:
        client: httpx.Client = app.client
        for _ in range(100):
            client.post("/api/chat", json=body)
        out = []
        for _ in range(n):
            began = time.perf_counter()
            client.post("/api/chat", json=body)
            out.append((time.perf_counter() - began) * 1000)
        return out


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def scrape_ms(models: int) -> float:
    found = build_metrics(Settings())
    assert found is not None
    found.labels.served = lambda name: True
    m = found.m
    for i in range(models):
        for status in ("200", "429", "500"):
            m.requests.labels("openai", "/v1/chat/completions", f"model-{i}", "local", status).inc()
        m.duration.labels("openai", f"model-{i}", "local").observe(0.5)
        m.ttft.labels("openai", f"model-{i}", "local").observe(0.1)
        m.tokens.labels(f"model-{i}", "local", "prompt").inc(10)
    m.exposition()
    began = time.perf_counter()
    for _ in range(20):
        body, _ = m.exposition()
    print(f"  /metrics with {models} models: {len(body) / 1024:.0f} KB", end="")
    return (time.perf_counter() - began) / 20 * 1000


async def gateway_rows(rounds: int) -> None:
    print("gateway (CPU µs per operation; baseline: the same gateway without the policy)")
    for label, pieces, embed in (("chat, 20 pieces", 20, False), ("embedding", 0, True)):
        off = await per_op([], pieces, rounds, embed)
        on = await per_op([recorder()], pieces, rounds, embed)
        print(f"  {label:16s} off {off:7.1f}  on {on:7.1f}  added {on - off:6.1f} µs ({on / off:4.2f}x)")  # fmt: skip
    off = await per_op([], 400, max(20, rounds // 20))
    on = await per_op([recorder()], 400, max(20, rounds // 20))
    print(f"  per streamed piece (400-piece reply): added {(on - off) / 400:.2f} µs")


def main(rounds: int) -> None:
    asyncio.run(gateway_rows(rounds))
    print("HTTP in process, non-streaming /api/chat (ms; alternating rounds)")
    samples: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(6):
            for on in (False, True):
                samples[on] += http_latencies(on, rounds // 6, Path(tmp) / f"{i}-{on}")
    for q in (50, 99):
        off, on = pct(samples[False], q), pct(samples[True], q)
        print(f"  p{q}: off {off:.3f}  on {on:.3f}  added {on - off:+.3f} ms ({on / off:4.2f}x)")
    print(f" -> {scrape_ms(100):.1f} ms to render")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    main(parser.parse_args().rounds)
