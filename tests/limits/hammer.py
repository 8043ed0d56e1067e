"""Four processes hammering one limit in the real Redis at once, each with its own
client (and, with ``share``, its own replica's allowance): how many they admitted."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

from llmux.limits.allowance import Allowances
from llmux.limits.gcra import Limit, Limiter, RedisLimiter


def _hammer(url: str, prefix: str, count: int, share: float, window: tuple[float, float],
            out: Any) -> None:  # fmt: skip
    start, stop_at = window
    time.sleep(max(0.0, start - time.time()))  # all four begin together

    async def run() -> int:
        limiter: Limiter = RedisLimiter(url, prefix=prefix)
        if share:
            limiter = Allowances(limiter, share, 1.0, 30.0)  # type: ignore[arg-type]
        admitted = 0
        limit = Limit("shared", count=count, period_s=1.0)
        while time.time() < stop_at:
            if (await limiter.acquire([limit])).allowed:
                admitted += 1
        await limiter.aclose()
        return admitted

    out.put(asyncio.run(run()))


def four_processes(url: str, prefix: str, count: int, seconds: float, share: float = 0) -> int:
    """Admissions by four processes on one limit of ``count`` a second for ``seconds``."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = time.time() + 2.0  # after the spawned interpreters are up
    window = (start, start + seconds)
    procs = [ctx.Process(target=_hammer, args=(url, prefix, count, share, window, results))
             for _ in range(4)]  # fmt: skip
    for p in procs:
        p.start()
    admitted = sum(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return int(admitted)
