"""What the audit trail adds to a request: the whole app in process (every middleware,
the gateway and its chain with usage records, a real SQLite database), driven through
ASGI with no sockets, against the same app with the audit trail off, in the same run,
rounds interleaved. The backend answers at once (8 pieces), so what is measured is
llmux's own time; the drainer and the fsync thread run as in production.

    .venv/bin/python bench/audit.py [--rounds 20] [--requests 300] [--concurrency 1,8] [--no-wait]

It prints p50, p99 and p99.9 per variant and what audit adds at each: off (baseline),
on (the default: written before the response ends, fsync'd within 0.1 s) and
wait_for_fsync (a response's end waits for its group fsync).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from llmux.audit.trail import build_audit
from llmux.auth.secrets import Keyring, load_master
from llmux.config import Settings, StoreSettings
from llmux.core.chunks import ChatChunk, Metrics
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.models.manager import ModelManager
from llmux.models.store import ModelStore
from llmux.server.app import create_app
from llmux.services import Services, access_control, build_quotas, policies
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.upstream.router import UpstreamRouter

PIECES = [f" word{i}" for i in range(8)]
BODY = json.dumps({
    "model": "bench", "stream": False,
    "messages": [{"role": "system", "content": "You are terse. " * 20},
                 {"role": "user", "content": "Tell me about the weather today. " * 12}],
}).encode()  # fmt: skip
HEADERS = [(b"host", b"127.0.0.1:11434"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]  # fmt: skip


class Backend:
    name = "local"

    def has(self, model: str) -> bool:
        return True

    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        for piece in PIECES:
            yield ChatChunk(content=piece, model=request.model)
        yield ChatChunk(done=True, done_reason="stop", metrics=Metrics(300, 0, len(PIECES)),
                        model=request.model)  # fmt: skip

    def models(self) -> list[Any]:
        return []

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


def variant(home: Path, audit: dict[str, Any]) -> tuple[FastAPI, Services]:
    """The app as ``llmux serve`` assembles it, over the bench backend."""
    settings = Settings(home=home, audit=audit, server={"access_log": False},
                        metrics={"enabled": False}, store={"bundled_model": ""})  # fmt: skip
    db = Database(database_url(None, home))
    quotas = build_quotas(settings, db)
    trail = build_audit(settings, db, Keyring(load_master(None, home)))
    gateway = Gateway(
        Backend(),  # type: ignore[arg-type]
        manager=ModelManager(ModelStore(home / "models"), StoreSettings(bundled_model="")),
        upstreams=UpstreamRouter([]),
        policies=policies(settings, quotas, audit=trail),
    )
    history = ChatHistory(SqlConversations(db), gateway)
    services = Services(gateway, history, db, access_control(settings, db), quotas, audit=trail,
                        reconcile_s=0.0)  # fmt: skip
    return create_app(settings, services), services


async def one(app: FastAPI, path: str) -> float:
    """Seconds from the request to its response's last byte."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    done = 0.0

    async def send(message: dict[str, Any]) -> None:
        nonlocal done
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done = time.perf_counter()

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "headers": HEADERS, "query_string": b"", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 11434), "scheme": "http", "http_version": "1.1",
             "root_path": "", "app": app}  # fmt: skip
    began = time.perf_counter()
    await app(scope, receive, send)
    return done - began


async def batch(app: FastAPI, n: int, concurrency: int) -> list[float]:
    out: list[float] = []

    async def worker(k: int) -> None:
        for _ in range(k):
            out.append(await one(app, "/api/chat"))

    share = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*[worker(k) for k in share])
    return out


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(rounds: int, requests: int, levels: list[int], wait: bool) -> None:
    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="llmux-bench-audit-"))
    makers: dict[str, Callable[[Path], tuple[FastAPI, Services]]] = {
        "off (baseline)": lambda h: variant(h, {"enabled": False}),
        "on": lambda h: variant(h, {"enabled": True}),
        "wait_for_fsync": lambda h: variant(h, {"enabled": True, "wait_for_fsync": True}),
    }
    if not wait:
        del makers["wait_for_fsync"]
    async with contextlib.AsyncExitStack() as stack:
        apps = {}
        for i, (name, make) in enumerate(makers.items()):
            app, services = make(work / str(i))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = (app, services)
        for concurrency in levels:
            samples: dict[str, list[list[float]]] = {name: [] for name in apps}
            for app, _ in apps.values():  # warm
                await batch(app, 200, concurrency)
            for r in range(rounds):
                order = list(apps.items()) if r % 2 == 0 else list(reversed(apps.items()))
                for name, (app, _) in order:
                    samples[name].append(await batch(app, requests, concurrency))
            report(concurrency, samples)
        audit = apps["on"][1].audit
        assert audit is not None
        await audit.flush()
        print(f"records spooled and drained by 'on': {audit.spool.seq} "
              f"(backlog {audit.backlog})")  # fmt: skip


def report(concurrency: int, rounds: dict[str, list[list[float]]]) -> None:
    """Pooled p50, p99, p99.9 and the median over rounds of each round's p99 (steadier
    on a busy machine), and what each variant adds to the baseline's."""

    def stats(per_round: list[list[float]]) -> tuple[float, ...]:
        pooled = [x for r in per_round for x in r]
        p99s = [pct(r, 0.99) for r in per_round]
        return (pct(pooled, 0.5), pct(pooled, 0.99), pct(pooled, 0.999),
                statistics.median(p99s), statistics.fmean(pooled) * 1000)  # fmt: skip

    base = stats(rounds["off (baseline)"])
    n = sum(len(r) for r in rounds["off (baseline)"])
    print(f"concurrency {concurrency}: {n} requests per variant in {len(rounds['on'])} rounds, "
          f"POST /api/chat ({len(BODY)} B body, {len(PIECES)}-piece reply), ms")  # fmt: skip
    for name, per_round in rounds.items():
        got = stats(per_round)
        added = [g - b for g, b in zip(got, base, strict=True)]
        print(f"  {name:15s} p50 {got[0]:6.3f}  p99 {got[1]:6.3f}  p99.9 {got[2]:6.3f}  "
              f"round-p99 {got[3]:6.3f}  mean {got[4]:6.3f} | added: p50 {added[0]:+.3f}  "
              f"p99 {added[1]:+.3f}  round-p99 {added[3]:+.3f}  mean {added[4]:+.3f}")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--no-wait", action="store_true", help="leave out the wait_for_fsync variant")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    asyncio.run(main(args.rounds, args.requests, levels, not args.no_wait))
