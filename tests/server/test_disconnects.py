"""A client that leaves is noticed from the moment its request is accepted (issue 21
item 12): queued work whose client left is dropped before it is evaluated, and a
non-streaming generation stops when its client goes. A real server, one sequence slot."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL, Server, cancelled_counts, running_server


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(
        tmp_path_factory,
        "one-slot-disconnects",
        {"LLMUX_ENGINE__NUM_PARALLEL": "1", "LLMUX_ENGINE__KEEP_ALIVE": "30m"},
    )


def chat(content: str, max_tokens: int, bias: dict[str, int], stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "logit_bias": bias,
        "stream": stream,
    }


async def first_token_after(http: httpx.AsyncClient, body: dict[str, Any]) -> float:
    """Seconds to the first token of a stream that is read to its end."""
    t0 = time.monotonic()
    first: float | None = None
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {") and "content" in line:
                first = time.monotonic() - t0
    assert first is not None, "no token came"
    return first


def dropped_while_queued(server: Server) -> int:
    return sum(int(n) for n in re.findall(r"dropped (\d+) queued requests", server.log.read_text()))


def test_abandoned_queued_streams_are_never_evaluated(single: Server, no_eos: dict[str, int]) -> None:  # fmt: skip
    async def run() -> tuple[float, int, int]:
        limits = httpx.Limits(max_connections=64)  # a connection each; one client, no TLS set-up
        async with httpx.AsyncClient(base_url=single.url, timeout=120, limits=limits) as http:
            await http.post("/v1/chat/completions", json=chat("hi", 1, no_eos, False))  # loaded
            before = len(cancelled_counts(single))
            dropped = dropped_while_queued(single)

            async def live() -> None:
                body = chat("Write a long essay about rivers.", 400, no_eos, True)
                async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    await r.aread()

            async def abandoned(i: int) -> None:
                body = chat(f"Question number {i}?", 50, no_eos, True)
                async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    await r.aread()

            holder = asyncio.create_task(live())
            await asyncio.sleep(0.5)  # the live stream holds the only slot
            waiting = [asyncio.create_task(abandoned(i)) for i in range(50)]
            await asyncio.sleep(1.5)  # all 50 are queued behind it
            for task in waiting:
                task.cancel()  # the clients hang up
            await asyncio.gather(*waiting, return_exceptions=True)
            assert not holder.done(), "the live stream still holds the slot"
            await holder
            fresh = await first_token_after(http, chat("Say hello.", 5, {}, True))
            gone = dropped_while_queued(single) - dropped
            return fresh, len(cancelled_counts(single)) - before, gone

    fresh, cancelled_after_start, gone = asyncio.run(run())
    assert gone == 50, "every abandoned request was dropped from the queue before it ran"
    assert cancelled_after_start == 0, "abandoned requests were started and then cancelled"
    assert fresh < 5.0, f"the fresh request waited {fresh:.1f} s behind abandoned work"


def test_a_non_streaming_client_that_leaves_stops_its_generation(
    single: Server, no_eos: dict[str, int]
) -> None:
    before = len(cancelled_counts(single))
    body = chat("Write a very long essay.", 3000, no_eos, False)
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=single.url, timeout=1.5) as http:
        http.post("/v1/chat/completions", json=body)
    left = time.monotonic()
    while len(cancelled_counts(single)) == before and time.monotonic() - left < 20:
        time.sleep(0.05)
    counts = cancelled_counts(single)[before:]
    assert counts and counts[0] < 3000, "the generation went on after its client left"
    with httpx.Client(base_url=single.url, timeout=60) as http:  # the slot is free again
        r = http.post("/v1/chat/completions", json=chat("hi", 3, {}, False))
        assert r.status_code == 200
