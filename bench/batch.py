"""The Batch API on the embedded engine, against a real ``llmux serve`` with the bundled
model, everything in one run:

1. **Interactive time to first token while a batch runs.** Interactive streaming
   requests, one at a time, on an idle server; then the same while a batch of long
   lines runs; then while the same lines run as ordinary requests from ``concurrency``
   clients (the load without the batch priority); then idle again. It prints the median
   and p90 TTFT of each phase and their ratios to the idle ones.
2. **A batch against the same lines sent one by one.** ``--lines`` short lines as a
   batch (create to ``completed``), then the same lines sent one after another, then
   from ``concurrency`` clients at once; the ratios of the times.

    .venv/bin/python bench/batch.py [--probes 20] [--lines 64] [--slots 4] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

MODEL = "smollm2:135m"
TOPICS = ["invoices", "passwords", "shipping", "refunds", "crashes", "printers", "email"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(home: Path, slots: int, concurrency: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update({
        "LLMUX_HOME": str(home), "LLMUX_HOST": f"127.0.0.1:{port}",
        "LLMUX_ENGINE__NUM_PARALLEL": str(slots), "LLMUX_ENGINE__KEEP_ALIVE": "30m",
        "LLMUX_BATCH__CONCURRENCY": str(concurrency), "LLMUX_BATCH__POLL_S": "0.5",
        "LLMUX_SERVER__ACCESS_LOG": "false",
    })  # fmt: skip
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llmux", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start; see " + str(home / "server.log"))


def chat(content: str, max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": content}]}  # fmt: skip


def lines_of(n: int, max_tokens: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": chat(f"Ticket {tag}-{i}: a customer writes about {TOPICS[i % len(TOPICS)]}. Summarise it.", max_tokens)}
        for i in range(n)
    ]  # fmt: skip


async def ttft(client: httpx.AsyncClient, i: int) -> float:
    """Seconds to the first piece of text of a streamed interactive request."""
    body = {**chat(f"Probe {i}: name one colour of the sea around {TOPICS[i % len(TOPICS)]}.", 4), "stream": True}  # fmt: skip
    start, first = time.perf_counter(), 0.0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():  # read to the end, as a client does
            if first or not line.startswith("data: {"):
                continue
            if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    if not first:
        raise RuntimeError("no text in the probe's reply")
    return first


async def probes(client: httpx.AsyncClient, n: int, offset: int) -> list[float]:
    out = []
    for i in range(n):
        out.append(await ttft(client, offset + i))
        await asyncio.sleep(0.2)
    return out


async def submit(client: httpx.AsyncClient, lines: list[dict[str, Any]]) -> str:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    made = (await client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})).json()  # fmt: skip
    body = {"input_file_id": made["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}  # fmt: skip
    return str((await client.post("/v1/batches", json=body)).json()["id"])


async def batch_state(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/v1/batches/{batch_id}")).json())


async def until_done(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    while (state := await batch_state(client, batch_id))["status"] not in ("completed", "failed", "cancelled", "expired"):  # fmt: skip
        await asyncio.sleep(0.1)
    return state


async def clients(client: httpx.AsyncClient, bodies: list[dict[str, Any]], n: int, stop: Callable[[], bool] | None = None) -> None:  # fmt: skip
    """Send ``bodies`` from ``n`` clients at once (until ``stop()``, round and round)."""
    queue = list(bodies)

    async def one() -> None:
        while queue and not (stop and stop()):
            body = queue.pop(0)
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            if stop is not None:
                queue.append(body)

    await asyncio.gather(*(one() for _ in range(n)))


def summary(name: str, values: list[float], base: list[float] | None) -> str:
    p50, p90 = statistics.median(values), sorted(values)[int(0.9 * (len(values) - 1))]
    ratio = f"  x{p50 / statistics.median(base):.2f} p50, x{p90 / sorted(base)[int(0.9 * (len(base) - 1))]:.2f} p90" if base else ""  # fmt: skip
    return f"  {name:<34} p50 {p50 * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms{ratio}"


async def ttft_phases(client: httpx.AsyncClient, n: int, concurrency: int) -> None:
    print(f"interactive TTFT, {n} probes a phase, one at a time:")
    idle = await probes(client, n, 0)
    print(summary("idle", idle, None))
    batch_id = await submit(client, lines_of(400, 48, "load"))
    while (await batch_state(client, batch_id))["request_counts"]["completed"] < 4:
        await asyncio.sleep(0.1)
    busy = await probes(client, n, 1000)
    state = await batch_state(client, batch_id)
    await client.post(f"/v1/batches/{batch_id}/cancel")
    print(summary(f"a batch running ({state['request_counts']['completed']} lines done)", busy, idle))  # fmt: skip
    await until_done(client, batch_id)
    done = False
    load = asyncio.create_task(clients(client, [x["body"] for x in lines_of(400, 48, "same")], concurrency, lambda: done))  # fmt: skip
    await asyncio.sleep(3)
    plain = await probes(client, n, 2000)
    done = True
    await load
    print(summary(f"the same load as {concurrency} clients", plain, idle))
    again = await probes(client, n, 3000)
    print(summary("idle again", again, idle))


async def timed(work: Awaitable[Any]) -> float:
    start = time.perf_counter()
    await work
    return time.perf_counter() - start


async def throughput(client: httpx.AsyncClient, n: int, concurrency: int) -> None:
    print(f"\n{n} lines of 16 tokens:")
    batch_id = ""

    async def as_batch() -> None:
        nonlocal batch_id
        batch_id = await submit(client, lines_of(n, 16, "t"))
        state = await until_done(client, batch_id)
        assert state["request_counts"]["completed"] == n, state

    batch_s = await timed(as_batch())
    bodies = [x["body"] for x in lines_of(n, 16, "u")]
    one_s = await timed(clients(client, bodies, 1))
    many_s = await timed(clients(client, [x["body"] for x in lines_of(n, 16, "v")], concurrency))
    print(f"  as a batch                         {batch_s:6.1f} s  ({n / batch_s:.1f} lines/s)")
    print(f"  one by one                         {one_s:6.1f} s  x{one_s / batch_s:.2f} the batch's time")  # fmt: skip
    print(f"  {concurrency} clients at once                  {many_s:6.1f} s  x{many_s / batch_s:.2f} the batch's time")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp), args.slots, args.concurrency)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=600) as client:
                await ttft(client, -1)  # loads the model
                print(f"llmux serve, {MODEL}, num_parallel {args.slots}, batch concurrency {args.concurrency}, {os.cpu_count()} cores\n")  # fmt: skip
                await ttft_phases(client, args.probes, args.concurrency)
                await throughput(client, args.lines, args.concurrency)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--lines", type=int, default=64)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
