"""Gateway overhead, two llmux versions side by side: the same fast upstream, both
servers started at once, c=1 and c=32 non-streaming loads alternating between them.

    .venv/bin/python bench/gateway_ab.py --before-src /tmp/before/src [--rounds 4]
    .venv/bin/python bench/gateway_ab.py --auth [--rounds 6]
    .venv/bin/python bench/gateway_ab.py --quotas [--rounds 6]

``--auth`` compares this version with itself: access control off, and on with every
request carrying an API key (``llmux+auth`` of ``bench/gateway.py``). ``--quotas`` does
the same for everything quotas add: llmux without usage records (``llmux-bare``) and
llmux as installed (``llmux``: usage records on) against ``llmux+quotas`` (access
control, request/token/concurrency limits in the local Redis, usage records), and
prints the added c=1 p50 and the c=32 share of each baseline, from the medians and as
the median of the rounds' own ratios.

``--before-src`` is the ``src`` folder of another checkout (``git worktree add
/tmp/before <rev>``). Single runs of ``bench/gateway.py`` drift with the machine; this
prints the medians over the rounds, with each round's figures, for both versions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g
from servers import free_port


def start(work: Path, upstream: str, tag: str, src: str | None) -> g.Target:
    """``bench/gateway.py``'s llmux, from ``src`` if given. The flat log level is for
    versions before sectioned settings (they also ignore ``[store]`` and so register
    the bundled model, which costs them nothing under load)."""
    extra = {"LLMUX_LOG_LEVEL": "warning", **({"PYTHONPATH": src} if src else {})}
    return g.start_llmux(work, upstream, tag, **extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before-src", help="src folder of the other version")
    ap.add_argument("--auth", action="store_true", help="access control off vs on instead")
    ap.add_argument("--quotas", action="store_true", help="bare llmux vs llmux+quotas instead")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=3.0)
    args = ap.parse_args()
    if sum((bool(args.before_src), args.auth, args.quotas)) != 1:
        ap.error("give one of --before-src, --auth, --quotas")
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="llmux-bench-ab-"))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    up = g.spawn("upstream", [sys.executable, g.__file__, "--serve-upstream", str(up_port)],
                 work, "/v1/models", upstream)  # fmt: skip
    if args.auth:
        targets = [g.start_llmux(work, upstream, "llmux"), g.start_llmux_auth(work, upstream)]
    elif args.quotas:
        targets = [
            g.start_llmux_bare(work, upstream),
            g.start_llmux(work, upstream, "llmux"),
            g.start_llmux_quotas(work, upstream),
        ]
    else:
        targets = [
            start(work, upstream, "before", args.before_src),
            start(work, upstream, "after", None),
        ]
    direct = g.Target("direct", upstream + "/v1")
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        t.name: {1: [], 32: []} for t in [direct, *targets]
    }
    try:
        time.sleep(2)
        for r in range(args.rounds):
            order = targets if r % 2 == 0 else targets[::-1]  # who goes first alternates
            for t in [direct, *order]:
                for c in (1, 32):
                    runs[t.name][c].append(asyncio.run(g.load(t, c, args.duration, False, None)))
    finally:
        for t in targets:
            assert t.run is not None
            t.run.stop()
        up.stop()

    def med(name: str, c: int, key: str) -> float:
        return statistics.median(x[key] for x in runs[name][c])

    base = med("direct", 1, "p50_ms")
    for name in runs:
        print(
            f"{name}: c=1 p50 {med(name, 1, 'p50_ms'):.3f} ms (added {med(name, 1, 'p50_ms') - base:.3f}),"
            f" c=32 {med(name, 32, 'rps'):.0f} req/s, p50 {med(name, 32, 'p50_ms'):.1f} ms,"
            f" p99 {med(name, 32, 'p99_ms'):.1f} ms;"
            f" rounds c=32 req/s {[round(x['rps']) for x in runs[name][32]]}"
        )
    if args.quotas:
        quotas = targets[-1].name
        for plain in (t.name for t in targets[:-1]):
            added = med(quotas, 1, "p50_ms") - med(plain, 1, "p50_ms")
            share = med(quotas, 32, "rps") / med(plain, 32, "rps")
            each = statistics.median(
                q["rps"] / b["rps"] for q, b in zip(runs[quotas][32], runs[plain][32], strict=True)
            )
            print(
                f"{quotas} against {plain}: c=1 p50 added {added:+.3f} ms;"
                f" c=32 {share:.0%} of its req/s (median of the rounds' ratios {each:.0%})"
            )


if __name__ == "__main__":
    main()
