"""What each part of quotas adds, one variant at a time: llmux bare, with usage records,
with access control, with limits in process, and with one or all three limits in the
local Redis, against the same fast upstream, alternating rounds.

    .venv/bin/python bench/quotas_parts.py [--variants bare,usage,...] [--concurrency 1]

It prints each variant's median over the rounds: p50 latency at concurrency 1, or
requests/s above it. ``bench/gateway_ab.py --quotas`` compares the whole set at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g
from servers import free_port

LIMITS = g.QUOTA_LIMITS
REDIS = g.redis_env("parts")
OFF = g.USAGE_OFF


def variants(work: Path, upstream: str) -> dict[str, Callable[[], g.Target]]:
    rpm = {"LLMUX_LIMITS__REQUESTS_PER_MINUTE": "100000000"}
    return {
        "bare": lambda: g.start_llmux(work, upstream, "bare", **OFF),
        "usage": lambda: g.start_llmux(work, upstream, "usage"),
        "auth": lambda: g.start_llmux_auth(work, upstream, "auth", **OFF),
        "limits-in-process": lambda: g.start_llmux(
            work, upstream, "limits-in-process", **OFF, **LIMITS
        ),
        "rpm-redis": lambda: g.start_llmux(work, upstream, "rpm-redis", **OFF, **rpm, **REDIS),
        "limits-redis": lambda: g.start_llmux(
            work, upstream, "limits-redis", **OFF, **LIMITS, **REDIS
        ),
        "all": lambda: g.start_llmux_quotas(work, upstream),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variants", default="bare,usage,auth,limits-in-process,rpm-redis,limits-redis,all"
    )
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmux-bench-parts-"))
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    up = g.spawn("upstream", [sys.executable, g.__file__, "--serve-upstream", str(port)],
                 work, "/v1/models", upstream)  # fmt: skip
    makers = variants(work, upstream)
    targets = [makers[name]() for name in args.variants.split(",")]
    key = "p50_ms" if args.concurrency == 1 else "rps"
    seen: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        time.sleep(2)
        for _ in range(args.rounds):
            for t in targets:
                result = asyncio.run(g.load(t, args.concurrency, args.duration, False, None))
                seen[t.name].append(result[key])
    finally:
        for t in targets:
            assert t.run is not None
            t.run.stop()
        up.stop()
    base = statistics.median(seen[targets[0].name])
    for name, values in seen.items():
        m = statistics.median(values)
        if key == "p50_ms":
            print(f"{name}: c=1 p50 {m:.3f} ms, added {m - base:+.3f} ms")
        else:
            print(
                f"{name}: c={args.concurrency} {m:.0f} req/s, {m / base:.0%} of {targets[0].name}"
            )


if __name__ == "__main__":
    main()
