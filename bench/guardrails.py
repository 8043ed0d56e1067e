"""What PII redaction and moderation add, measured at the gateway (no HTTP), against
the same gateway with neither policy, in the same run:

* the request side: microseconds per KB of prompt (a 4 KB chat in Chinese and
  English with a few values in it);
* the reply side: microseconds per streamed chunk (a 400-piece reply);
* time to the first content chunk, with a backend that takes 20 ms before its first
  piece and 8 ms per piece after it (a small model on a CPU), for replies that start
  with an English word, with Chinese, with punctuation, and with a phone number.

    .venv/bin/python bench/guardrails.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence

from llmux.core.chunks import ChatChunk, Metrics
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest, Message
from llmux.gateway import Gateway
from llmux.policies import Policy
from llmux.policies.moderation import Moderation
from llmux.policies.redaction import Redaction
from llmux.policies.settings import ModerationSettings, RedactionSettings

PARAGRAPH = (
    "请把会议纪要发给我，顺便确认一下下周的安排。Please also check the budget table, "
    "the numbers from 2024 Q3 look off by 12.5 percent. 联系人的电话是 138 0013 8000，"
    "邮箱 li.lei@example.com。The server at 10.0.0.12 was restarted twice yesterday. "
)
WORDS = {"violence": ["kill them", "杀人", "bomb"], "hate": [f"slur{i}" for i in range(2000)]}


class Backend:
    """A backend with a first-piece delay and a per-piece delay, like a small model."""

    name = "local"

    def __init__(self, pieces: Sequence[str], first_s: float = 0.0, each_s: float = 0.0) -> None:
        self.pieces, self.first_s, self.each_s = pieces, first_s, each_s

    def has(self, model: str) -> bool:
        return True

    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        if self.first_s:
            await asyncio.sleep(self.first_s)
        for i, piece in enumerate(self.pieces):
            if i and self.each_s:
                await asyncio.sleep(self.each_s)
            yield ChatChunk(content=piece, model=request.model)
        yield ChatChunk(done=True, done_reason="stop", metrics=Metrics(10, 0, len(self.pieces)))

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


def chains() -> dict[str, list[Policy]]:
    redaction = Redaction(RedactionSettings(enabled=True))
    moderation = Moderation(ModerationSettings(enabled=True, words=WORDS))
    return {
        "off (baseline)": [],
        "redaction": [redaction],
        "moderation": [moderation],
        "both": [moderation, redaction],
    }


def request(kb: int) -> ChatRequest:
    text = PARAGRAPH * max(1, kb * 1024 // len(PARAGRAPH.encode()))
    return ChatRequest(model="m", messages=(Message("user", text),))


async def run_once(gateway: Gateway, req: ChatRequest) -> tuple[float, float]:
    """(seconds to the first content chunk, seconds to the end)."""
    ctx = RequestContext(api="openai")
    began = time.perf_counter()
    first = 0.0
    async for chunk in gateway.chat(ctx, req):
        if chunk.content and not first:
            first = time.perf_counter() - began
    return first, time.perf_counter() - began


async def cpu_per_request(policies: list[Policy], pieces: Sequence[str], kb: int, n: int) -> float:
    gateway = Gateway(Backend(pieces), policies=policies)
    req = request(kb)
    for _ in range(20):
        await run_once(gateway, req)
    began = time.process_time()
    for _ in range(n):
        await run_once(gateway, req)
    return (time.process_time() - began) / n * 1e6


async def ttft(policies: list[Policy], pieces: Sequence[str], n: int) -> float:
    gateway = Gateway(Backend(pieces, first_s=0.020, each_s=0.008), policies=policies)
    req = request(1)
    samples = [(await run_once(gateway, req))[0] for _ in range(n)]
    return statistics.median(samples) * 1000


async def main(rounds: int) -> None:
    variants = chains()
    short = ["ok"]
    reply = [f" word{i}" if i % 7 else "，中文" for i in range(400)]
    print("request side: 4 KB prompt, one-piece reply (CPU µs per request)")
    base = 0.0
    for name, chain in variants.items():
        us = await cpu_per_request(chain, short, 4, rounds)
        base = base or us
        print(
            f"  {name:16s} {us:8.1f} µs   added {us - base:7.1f} µs = {(us - base) / 4:6.1f} µs/KB"
        )
    print("reply side: 400-piece reply, 1 KB prompt (CPU µs per piece)")
    base = 0.0
    for name, chain in variants.items():
        us = await cpu_per_request(chain, reply, 1, max(10, rounds // 10))
        base = base or us
        print(f"  {name:16s} {us / 400:8.2f} µs   added {(us - base) / 400:6.2f} µs per piece")
    starts: dict[str, list[str]] = {
        "English word": ["The", " sky", " is", " blue", "."],
        "Chinese": ["天空", "是", "蓝色", "的"],
        "punctuation": ["Sure", ",", " the", " sky"],
        "a phone first": ["138", "0013", "8000", " is", " it"],
    }
    print("time to first content (ms, median; backend: 20 ms, then 8 ms a piece)")
    for label, pieces in starts.items():
        row = {
            name: await ttft(chain, pieces, max(20, rounds // 10))
            for name, chain in variants.items()
        }
        base = row["off (baseline)"]
        cells = "  ".join(f"{n} {v:6.1f} ({v / base:4.2f}x)" for n, v in row.items())
        print(f"  {label:14s} {cells}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.rounds))
