"""Concurrent streams: aggregate tokens/s and time to first token, llmux vs serial peers.

One command measures, one server at a time, on the bundled model with the same threads
and per-request context:

- llmux (continuous batching, default slots),
- llmux with ``LLMUX_ENGINE__NUM_PARALLEL=1`` (one request at a time, like Ollama's default),
- ``python -m llama_cpp.server`` (llama-cpp-python's server; installed by this script
  into a throwaway venv, from the engine wheel this machine already built when there is
  one).

    .venv/bin/python bench/concurrency.py [--levels 1,2,4,8,16] [--tokens 128] [--repeat 1]

First, as a ceiling, it times raw llama.cpp in this process (llama-cpp-python's
low-level API, no server): one llama_decode of N rows (one token of N sequences) against
N=1, on the same model, threads and flash-attention setting. No server can beat that
ratio on the machine.

At each concurrency level N, N clients send one streamed chat request each at the same
moment (different prompts and seeds, temperature 0.8, end tokens banned so every reply
has exactly --tokens tokens). Aggregate tok/s = all completion tokens / wall time of the
level; TTFT = time from sending a request to its first token. Prints a table per server
and the ratios: llmux at N vs llmux at 1, and llmux vs each peer at N.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import (
    Reply,
    Running,
    each_server,
    no_eos_bias,
    start_llmux,
    start_peer,
    stream_chat,
)

TOPICS = ["a lighthouse", "a dragon", "the sea", "a robot", "a city at night", "a forest",
          "a lost key", "the moon"]  # fmt: skip


@dataclass
class Level:
    n: int
    agg: float  # tokens per second, all streams together
    ttft_p50: float
    ttft_p95: float
    ttft_max: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def level(url: str, n: int, tokens: int, bias: dict[str, float]) -> Level:
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> Reply:
            prompt = f"Write a story about {TOPICS[i % len(TOPICS)]} (story {i})."
            return await stream_chat(
                client, url, [{"role": "user", "content": prompt}],
                max_tokens=tokens, temperature=0.8, seed=i, logit_bias=bias,
            )  # fmt: skip

        start = time.perf_counter()
        replies = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    ttfts = [r.ttft for r in replies]
    return Level(
        n=n,
        agg=sum(r.tokens for r in replies) / wall,
        ttft_p50=statistics.median(ttfts),
        ttft_p95=percentile(ttfts, 0.95),
        ttft_max=max(ttfts),
    )


def raw_ceiling(levels: list[int], threads: int, steps: int = 32) -> dict[int, float]:
    """Decode tokens/s of raw llama.cpp with N sequences per llama_decode call."""
    import llama_cpp
    from llama_cpp._internals import LlamaContext, LlamaModel

    from llmux.models.bundled import bundled_gguf

    path = bundled_gguf()
    assert path is not None
    model = LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False)  # fmt: skip
    params = llama_cpp.llama_context_default_params()
    params.n_seq_max = max(levels)
    params.n_ctx = 512 * max(levels)
    params.n_batch = params.n_ubatch = 64
    params.kv_unified = False
    params.n_threads = params.n_threads_batch = threads
    ctx = LlamaContext(model=model, params=params, verbose=False)
    batch = llama_cpp.llama_batch_init(64, 0, 1)
    mem = llama_cpp.llama_get_memory(ctx.ctx)

    def decode(rows: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(rows)
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        assert llama_cpp.llama_decode(ctx.ctx, batch) == 0

    rates: dict[int, list[float]] = {n: [] for n in levels}
    for _ in range(3):  # interleaved, so drift hits every level alike
        for n in levels:
            for seq in range(n):
                llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)
                decode([(100 + i, i, seq, i == 39) for i in range(40)])
            start = time.perf_counter()
            for step in range(steps):
                decode([(200 + step, 40 + step, seq, True) for seq in range(n)])
            rates[n].append(n * steps / (time.perf_counter() - start))
    llama_cpp.llama_batch_free(batch)
    ctx.close()
    model.close()
    return {n: statistics.median(r) for n, r in rates.items()}


def measure(run: Running, levels: list[int], tokens: int, bias: dict[str, float], repeat: int) -> list[Level]:  # fmt: skip
    """Every level ``repeat`` times, the levels interleaved so that drift in the
    machine's speed hits all of them alike; keeps each level's median run (with an
    even count, the lower of the two middle ones)."""
    asyncio.run(level(run.url, 1, 8, bias))  # warm up
    runs: dict[int, list[Level]] = {n: [] for n in levels}
    for _ in range(repeat):
        for n in levels:
            runs[n].append(asyncio.run(level(run.url, n, tokens, bias)))
    out = []
    for n in levels:
        ordered = sorted(runs[n], key=lambda lv: lv.agg)
        result = ordered[(len(ordered) - 1) // 2]  # the median; the lower one of two
        print(
            f"  {run.name:>22}  N={n:<3} {result.agg:7.1f} tok/s  TTFT p50 {result.ttft_p50:6.2f}s"
            f"  p95 {result.ttft_p95:6.2f}s  max {result.ttft_max:6.2f}s"
            + (f"  (runs: {', '.join(f'{r.agg:.1f}' for r in ordered)})" if repeat > 1 else ""),
            file=sys.stderr,
        )
        out.append(result)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,2,4,8,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="context per request")
    ap.add_argument("--slots", type=int, default=16, help="llmux num_parallel")
    ap.add_argument("--repeat", type=int, default=1, help="runs per level (median kept)")
    ap.add_argument("--no-peer", action="store_true", help="skip llama_cpp.server")
    ap.add_argument("--peer-venv", default=str(Path(tempfile.gettempdir()) / "llmux-bench-peer"))
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    bias = no_eos_bias()
    ceiling = raw_ceiling(levels, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        starters = [
            ("llmux", lambda: start_llmux("llmux", home, args.threads, args.ctx, LLMUX_ENGINE__NUM_PARALLEL=str(args.slots))),
            ("llmux num_parallel=1", lambda: start_llmux("llmux-serial", home, args.threads, args.ctx, LLMUX_ENGINE__NUM_PARALLEL="1")),
        ]  # fmt: skip
        if not args.no_peer:
            starters.append(("llama_cpp.server", lambda: start_peer(home, Path(args.peer_venv), args.threads, args.ctx)))  # fmt: skip
        results = each_server(starters, lambda run: measure(run, levels, args.tokens, bias, args.repeat))  # fmt: skip
    ours = results["llmux"]
    print(
        f"\nsmollm2:135m, {args.tokens} tokens per reply, {args.threads} threads, "
        f"context {args.ctx} per request, llmux slots {args.slots}, median of {args.repeat} run(s)"
    )
    head = f"{'N':>3} | {'server':<22} | {'tok/s':>7} | {'TTFT p50':>8} | {'TTFT p95':>8} | {'TTFT max':>8}"
    print(head)
    print("-" * len(head))
    for i, n in enumerate(levels):
        for name, rows in results.items():
            r = rows[i]
            print(
                f"{n:>3} | {name:<22} | {r.agg:7.1f} | {r.ttft_p50:7.2f}s | {r.ttft_p95:7.2f}s | {r.ttft_max:7.2f}s"
            )
    print("\nraw llama.cpp decode, N sequences per llama_decode (no server, no prompts):")
    for n in levels:
        print(
            f"  N={n:<3} {ceiling[n]:7.1f} tok/s  = {ceiling[n] / ceiling[levels[0]]:.2f}x N={levels[0]}"
        )
    print("\nratios (aggregate tok/s)")
    for i, n in enumerate(levels):
        parts = [f"llmux N={n} / llmux N=1: {ours[i].agg / ours[0].agg:.2f}x"]
        for name, rows in results.items():
            if name != "llmux":
                parts.append(f"vs {name}: {ours[i].agg / rows[i].agg:.2f}x")
                parts.append(f"TTFT max {ours[i].ttft_max:.2f}s vs {rows[i].ttft_max:.2f}s")
        print(f"N={n:<3} " + "; ".join(parts))


if __name__ == "__main__":
    main()
