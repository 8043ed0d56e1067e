"""CPU time per request of the quotas policy alone (admission, the charge after the
reply, the usage record and its share of the batched SQLite write), without HTTP: a
steadier figure than requests per second on a shared 2-core VM, where the load
generator and the upstream take the same cores.

    .venv/bin/python bench/quotas_cpu.py [--requests 20000]

Each variant runs in a fresh process (its own settings, database and Redis prefix),
in the order given, and the first one is the baseline: the policy with nothing to do.
It prints CPU microseconds per request (process time, all threads) and the added part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g

LIMITS = g.QUOTA_LIMITS
REDIS = g.redis_env("cpu")
OFF = g.USAGE_OFF
NO_SHARE = {"LLMUX_LIMITS__LOCAL_SHARE": "0"}
VARIANTS: dict[str, dict[str, str]] = {
    "nothing to do (baseline)": OFF,
    "usage records": {},
    "limits in process": {**OFF, **LIMITS},
    "limits in Redis, every request asks": {**OFF, **LIMITS, **REDIS, **NO_SHARE},
    "limits in Redis, a replica's share": {**OFF, **LIMITS, **REDIS},
    "limits in Redis (share) and usage records": {**LIMITS, **REDIS},
}


async def measure(n: int) -> float:
    from llmux.config import load_settings
    from llmux.core.context import Principal, RequestContext
    from llmux.policies import Operation, Outcome, Usage
    from llmux.services import build_quotas
    from llmux.storage.database import Database, database_url

    settings = load_settings()
    db = Database(database_url(None, settings.home_dir))
    await db.open()
    quotas = build_quotas(settings, db)
    if quotas.usage is not None:
        quotas.usage.start()
    op = Operation("chat", "bench", False, "relay", body_size=300, max_output=16)
    who = Principal(kind="key", id="bench", name="bench", user_id="u1")
    outcome = Outcome(Usage(10, 16, 0), "stop", 0.001, 0.001, usage_known=True)

    async def one() -> None:
        ctx = RequestContext("openai", "/v1/chat/completions", client="127.0.0.1", principal=who)
        ticket = await quotas.admit(ctx, op)
        quotas._open.setdefault(id(ctx), []).append(ticket)  # what _run does around the call
        quotas.finished(ctx, op, outcome)

    async def run(count: int) -> None:
        for i in range(count):
            await one()
            if i % 32 == 0:  # the loop turns, as between requests in the server
                await asyncio.sleep(0)
        if quotas.usage is not None:
            await quotas.usage.flush()

    await run(2000)  # warm: the book read, a share taken, the first batches written
    began = time.process_time()
    await run(n)
    cpu = (time.process_time() - began) / n * 1e6
    await quotas.aclose()
    if quotas.usage is not None:
        await quotas.usage.aclose()
    if quotas.limiter is not None:
        await quotas.limiter.aclose()
    await db.aclose()
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(f"{asyncio.run(measure(args.requests)):.1f}")
        return
    results: dict[str, float] = {}
    for name, env in VARIANTS.items():
        home = tempfile.mkdtemp(prefix="llmux-bench-cpu-")
        done = subprocess.run(
            [sys.executable, __file__, "--child", "1", "--requests", str(args.requests)],
            env={**os.environ, "LLMUX_HOME": home, "LLMUX_LOG_LEVEL": "error", **env},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[name] = float(done.stdout.strip().splitlines()[-1])
    base = next(iter(results.values()))
    print("| variant | CPU µs per request | added |")
    print("|---|---|---|")
    for name, cpu in results.items():
        print(f"| {name} | {cpu:.1f} | {cpu - base:+.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    main()
