"""The response cache's own cost, at the gateway, without HTTP: the same chat request
through the gateway with the cache off (a pass-through policy in the chain, so the
outcome meter runs as well) and with the cache on, in one process, one after another.

    .venv/bin/python bench/cache.py [--requests 5000]

The backend is a fake that streams 8 pieces and a final chunk at once, so what is
measured is the chain. Variants:

* ``cache off``: the baseline, the request repeated;
* ``L1 hit``: the request repeated, answered from memory;
* ``L2 hit``: the request repeated, answered from Redis (L1 off), loopback Redis;
* ``miss, L1``: a new request each time (key, lookup, record, store), against the same
  new requests with the cache off;
* ``miss, L1 + L2``: the same, with a Redis lookup and a (not awaited) Redis write.

Printed per variant: microseconds per request at p50 and p99, and the difference from
its baseline at each. Redis is ``$LLMUX_BENCH_REDIS`` or 127.0.0.1:6379, under a prefix
of this run's own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from llmux.core.chunks import ChatChunk, Metrics
from llmux.core.context import Principal, RequestContext
from llmux.core.request import ChatRequest, Message, Sampling
from llmux.gateway import Gateway
from llmux.policies import PassThrough, Policy
from llmux.policies.cache import Cache
from llmux.policies.cachestore import MemoryCache, RedisCache
from llmux.policies.settings import CacheSettings

MODEL = "bench:latest"
REDIS = os.environ.get("LLMUX_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WHO = Principal(kind="key", id="k1", name="bench", user_id="u1")
PIECES = ("Hello", " there", ",", " how", " can", " I", " help", "?")


@dataclass
class Backend:
    """Streams the same reply at once; counts its calls."""

    name: str = "local"
    calls: int = 0

    def has(self, model: str) -> bool:
        return model == MODEL

    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.calls += 1
        for piece in PIECES:
            yield ChatChunk(content=piece, model=MODEL)
        metrics = Metrics(prompt_tokens=24, completion_tokens=len(PIECES), total_ns=1000)
        yield ChatChunk(done=True, done_reason="stop", metrics=metrics, model=MODEL)


def request(i: int | None = None) -> ChatRequest:
    text = "Why is the sky blue? Answer in one sentence." + ("" if i is None else f" #{i}")
    messages = (Message("system", "You are a helpful assistant."), Message("user", text))
    return ChatRequest(MODEL, messages, sampling=Sampling(temperature=0, num_predict=64))


def gateway(policy: Policy) -> Gateway:
    gw = Gateway(Backend(), policies=[policy], digest=lambda name: "0" * 64)  # type: ignore[arg-type]
    if isinstance(policy, Cache):
        policy.bind(gw.served_by)
    return gw


async def run(gw: Gateway, requests: list[ChatRequest]) -> list[float]:
    """Seconds per request, each read to its end as the serving layer does."""
    out = []
    for i, req in enumerate(requests):
        ctx = RequestContext("openai", "/v1/chat/completions", client="127.0.0.1", principal=WHO)
        began = time.perf_counter()
        async for _ in gw.chat(ctx, req, stream=False):
            pass
        out.append(time.perf_counter() - began)
        if i % 64 == 0:
            await asyncio.sleep(0)  # the loop turns, as between requests (Redis writes go)
    return out


def cache(memory: bool, redis: RedisCache | None) -> Cache:
    settings = CacheSettings(
        enabled=True, memory_bytes=64 * 2**20 if memory else 0, redis=redis is not None
    )
    return Cache(settings, MemoryCache(settings.memory_bytes) if memory else None, redis)


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def measure(n: int) -> dict[str, tuple[list[float], list[float]]]:
    prefix = f"llmux-bench-cache:{os.getpid()}:"
    same = [request()] * n
    fresh = [request(i) for i in range(n)]
    fresh2 = [request(n + i) for i in range(n)]
    warm = [request(-1 - i) for i in range(500)]
    results: dict[str, tuple[list[float], list[float]]] = {}

    async def timed(policy: Policy, reqs: list[ChatRequest]) -> list[float]:
        gw = gateway(policy)
        await run(gw, warm + [reqs[0]] * 200)  # warm: the code paths, the entry stored
        gc.collect()
        return await run(gw, reqs)

    base_same = await timed(PassThrough(), same)
    base_fresh = await timed(PassThrough(), fresh)
    results["L1 hit"] = (base_same, await timed(cache(True, None), same))
    results["miss, L1"] = (base_fresh, await timed(cache(True, None), fresh))
    redis = RedisCache(REDIS, prefix)
    try:
        await redis.redis.ping()
    except Exception as exc:  # noqa: BLE001
        print(f"(Redis at {REDIS} not reachable: {exc}; L2 rows left out)")
        return results
    try:
        l2_only = cache(False, RedisCache(REDIS, prefix))
        gw = gateway(l2_only)
        await run(gw, [same[0]])
        assert l2_only.redis is not None
        await l2_only.redis.flush()  # the entry is in Redis before the hits are timed
        results["L2 hit"] = (base_same, await timed(l2_only, same))
        both = cache(True, RedisCache(REDIS, prefix))
        results["miss, L1 + L2"] = (base_fresh, await timed(both, fresh2))
        await l2_only.aclose()
        await both.aclose()
    finally:
        keys = [k async for k in redis.redis.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await redis.redis.delete(*keys)
        await redis.aclose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    results = asyncio.run(measure(args.requests))
    print(f"{args.requests} requests per variant; µs per request (gateway + chain + fake backend)")
    print("| variant | cache off p50 | p50 | added p50 | cache off p99 | p99 | added p99 |")
    print("|---|---|---|---|---|---|---|")
    for name, (base, xs) in results.items():
        b50, b99, v50, v99 = pct(base, 0.5), pct(base, 0.99), pct(xs, 0.5), pct(xs, 0.99)
        print(
            f"| {name} | {b50:.1f} | {v50:.1f} | {v50 - b50:+.1f} | {b99:.1f} | {v99:.1f} | "
            f"{v99 - b99:+.1f} |"
        )
    means = {name: statistics.fmean(xs) * 1e6 for name, (_, xs) in results.items()}
    print("means (µs): " + ", ".join(f"{k} {v:.1f}" for k, v in means.items()))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    main()
