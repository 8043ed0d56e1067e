"""What a rate-limit check costs: the GCRA script on the local Redis (one round trip,
two limits) and the in-process limiter, against a bare Redis PING in the same run.

    .venv/bin/python bench/limiter.py [--requests 5000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from llmux.limits.gcra import Limit, MemoryLimiter, RedisLimiter


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def main(n: int, url: str) -> None:
    import redis.asyncio as aioredis

    limits = [Limit("rpm:key:bench", 10**9), Limit("rpm:global", 10**9)]  # never refused
    redis_limiter = RedisLimiter(url, prefix=f"llmux-bench:{uuid.uuid4().hex[:8]}:")
    memory = MemoryLimiter()
    ping = aioredis.Redis.from_url(url)
    await ping.ping()
    await redis_limiter.acquire(limits)  # loads the script
    rows = {}
    for name, call in (
        ("redis PING (baseline)", lambda: ping.ping()),
        ("GCRA on Redis, 2 limits", lambda: redis_limiter.acquire(limits)),
        ("GCRA in process, 2 limits", lambda: memory.acquire(limits)),
    ):
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - started) * 1e6)
        rows[name] = percentiles(samples)
    await redis_limiter.aclose()
    await ping.aclose()
    base = rows["redis PING (baseline)"][0]
    print("| check | p50 (us) | p99 (us) | p50 / PING |")
    print("|---|---|---|---|")
    for name, (p50, p99) in rows.items():
        print(f"| {name} | {p50:.0f} | {p99:.0f} | {p50 / base:.2f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    asyncio.run(main(args.requests, args.redis))
