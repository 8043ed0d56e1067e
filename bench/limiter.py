"""What a limit check costs: the GCRA script on the local Redis (one round trip; two
rate limits, and the full set a production request meets: requests, tokens and a
concurrency lease for its key and for the server, then the settlement after the reply),
a budget hold and settle, and the same in process, against a bare Redis PING in the
same run.

    .venv/bin/python bench/limiter.py [--requests 5000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from llmux.limits.allowance import Allowances
from llmux.limits.budgets import Hold, MemoryBudgets, RedisBudgets, counter_key
from llmux.limits.gcra import Limit, Limiter, MemoryLimiter, RedisLimiter
from llmux.storage.usage import BudgetRow


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def main(n: int, url: str) -> None:
    import redis.asyncio as aioredis

    limits = [Limit("rpm:key:bench", 10**9), Limit("rpm:global", 10**9)]  # never refused
    full = [
        Limit(f"{kind}:{scope}", count, period, kind=lk, tally=kind == "tpm",
              cost=120 if kind == "tpm" else 1)
        for scope in ("key:bench", "global")
        for kind, count, period, lk in (("rpm", 10**9, 60.0, "rate"), ("tpm", 10**12, 60.0, "rate"),
                                        ("conc", 10**6, 60.0, "lease"))
    ]  # fmt: skip
    prefix = f"llmux-bench:{uuid.uuid4().hex[:8]}:"
    redis_limiter = RedisLimiter(url, prefix=prefix)
    shares = Allowances(RedisLimiter(url, prefix=prefix + "share:"), 0.02, 1.0, 60.0)
    memory = MemoryLimiter()
    budget = BudgetRow("bench", "key:bench", "day", 10**15)
    hold = [Hold(budget, counter_key(budget), 100, budget.amount_micros)]
    on_redis = RedisBudgets(redis_limiter.scripts, prefix)
    in_memory = MemoryBudgets()
    ping = aioredis.Redis.from_url(url)
    await ping.ping()
    await redis_limiter.acquire(limits)  # loads the script
    counter = iter(range(10**9))

    async def request(limiter: Limiter) -> None:
        """Admit, then settle as the server does: not waited for (on Redis the settle
        rides with the next admission's pipeline)."""
        lease = str(next(counter))
        await limiter.acquire(full, lease)
        changes = [
            (lim, -20 if lim.tally else 0) for lim in full if lim.tally or lim.kind == "lease"
        ]
        limiter.settle_later(changes, lease)
        await asyncio.sleep(0)  # as in the server, the loop goes on before the next request

    async def spend(budgets: MemoryBudgets | RedisBudgets) -> None:
        rid = str(next(counter))
        await budgets.hold(rid, hold, seed)
        await budgets.settle(rid, [(hold[0], 80)])

    async def seed(_: BudgetRow) -> int:
        return 0

    rows = {}
    for name, call in (
        ("redis PING (baseline)", lambda: ping.ping()),
        ("GCRA on Redis, 2 limits", lambda: redis_limiter.acquire(limits)),
        ("a request's 6 limits on Redis: admit + settle", lambda: request(redis_limiter)),
        ("the same with a replica's share (local_share 2 %)", lambda: request(shares)),
        ("a budget on Redis: hold + settle", lambda: spend(on_redis)),
        ("GCRA in process, 2 limits", lambda: memory.acquire(limits)),
        ("a request's 6 limits in process: admit + settle", lambda: request(memory)),
        ("a budget in process: hold + settle", lambda: spend(in_memory)),
    ):
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - started) * 1e6)
        rows[name] = percentiles(samples)
    await redis_limiter.aclose()
    await shares.aclose()
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
