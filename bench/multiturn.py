"""Multi-turn chat: time to first token at turn k vs turn 1, llmux vs llama_cpp.server.

A chat with a long system prompt goes on for --turns turns; every turn re-sends the
whole history, as OpenAI-API clients do. Without prefix reuse each turn evaluates more
history and its first token comes later; with it, only the new part is evaluated.

    .venv/bin/python bench/multiturn.py [--turns 10] [--system-words 600] [--runs 3]

Both servers get the same conversation (greedy, --reply tokens per answer, the
assistant turns they produced themselves). Prints TTFT per turn (median over runs, each
run with a fresh system prompt so nothing is cached from the previous run) and the
ratios turn 6 / turn 1 and turn N / turn 1 (issue 4's target: <= 1.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import Running, each_server, start_llmux, start_peer, stream_chat

QUESTIONS = [
    "Hello! Who are you?", "What is the capital of France?", "Name three colours.",
    "What is 12 times 3?", "Suggest a name for a cat.", "What is the opposite of hot?",
    "Give me a word that rhymes with tree.", "How many days are in a week?",
    "What do bees make?", "Say goodbye in Spanish.", "What is water made of?",
    "Name a large animal.",
]  # fmt: skip


def system_prompt(words: int, run: int) -> str:
    rule = "You are a patient tutor for a school class; answer in one short sentence. "
    text = f"Session {run}. " + rule * (words // len(rule.split()) + 1)
    return " ".join(text.split()[:words])


async def conversation(url: str, system: str, turns: int, reply: int) -> list[float]:
    messages = [{"role": "system", "content": system}]
    ttfts = []
    async with httpx.AsyncClient(timeout=600) as client:
        for turn in range(turns):
            messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            r = await stream_chat(client, url, messages, max_tokens=reply, temperature=0)
            messages.append({"role": "assistant", "content": r.text})
            ttfts.append(r.ttft)
    return ttfts


def measure(run: Running, args: argparse.Namespace) -> list[float]:
    per_run = [
        asyncio.run(conversation(run.url, system_prompt(args.system_words, i + 1000 * id(run)), args.turns, args.reply))
        for i in range(args.runs)
    ]  # fmt: skip
    medians = [statistics.median(col) for col in zip(*per_run, strict=True)]
    print(f"  {run.name}: " + " ".join(f"{t:.2f}" for t in medians), file=sys.stderr)
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--system-words", type=int, default=600)
    ap.add_argument("--reply", type=int, default=32, help="max tokens per answer")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-venv", default=str(Path(tempfile.gettempdir()) / "llmux-bench-peer"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        starters = [("llmux", lambda: start_llmux("llmux", home, args.threads, args.ctx))]
        if not args.no_peer:
            starters.append(("llama_cpp.server", lambda: start_peer(home, Path(args.peer_venv), args.threads, args.ctx)))  # fmt: skip
        results = each_server(starters, lambda run: measure(run, args))
    print(
        f"\nsmollm2:135m, system prompt {args.system_words} words, {args.turns} turns, "
        f"{args.reply}-token greedy answers, {args.threads} threads, median of {args.runs} runs"
    )
    print("TTFT per turn (s):")
    for name, ttfts in results.items():
        print(f"  {name:<18} " + " ".join(f"{t:5.2f}" for t in ttfts))
    for name, ttfts in results.items():
        six = ttfts[min(5, len(ttfts) - 1)]
        print(
            f"{name}: turn 6 / turn 1 = {six / ttfts[0]:.2f}x; "
            f"turn {len(ttfts)} / turn 1 = {ttfts[-1] / ttfts[0]:.2f}x"
        )


if __name__ == "__main__":
    main()
