"""Gateway overhead: the same load direct to a fast upstream, through llmux, through
the LiteLLM proxy and through Portkey's open-source gateway.

    .venv/bin/python bench/gateway.py [--duration 5] [--concurrency 1,8,32,64]

A tiny OpenAI-compatible upstream (raw asyncio on uvloop, fixed replies, no model)
starts first, so what is measured is the hop. LiteLLM (PyPI ``litellm[proxy]<=1.103.0``)
and Portkey (npm ``@portkey-ai/gateway``) are installed into ``--workdir`` (a throwaway
folder, reused when it already has them). For each target and concurrency the client
sends non-streaming chat completions for ``--duration`` seconds and reports requests/s
and p50/p99 latency; at concurrency 1 it also times streams to the first byte. Latency
added = target minus direct, measured in the same run. RSS is taken idle and at its peak
under the concurrency-64 load (process tree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import Running, free_port, wait_ready

MODEL = "bench-model"
LITELLM_SPEC = "litellm[proxy]<=1.103.0"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
REPLY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
).encode()
EVENTS = (
    b"".join(
        b"data: "
        + json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}],
            }
        ).encode()
        + b"\n\n"
        for t in ("Hello", " there", "!")
    )
    + b"data: [DONE]\n\n"
)
MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


# -- the fast upstream ----------------------------------------------------------------


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.reply(head, body)

    def reply(self, head: str, body: bytes) -> None:
        if head.startswith("get"):
            payload, ctype = MODELS, b"application/json"
        elif b'"stream":true' in body.replace(b" ", b""):
            payload, ctype = EVENTS, b"text/event-stream"
        else:
            payload, ctype = REPLY, b"application/json"
        if ctype == b"text/event-stream":  # streams are chunked, as real servers send them
            size = f"{len(payload):x}".encode()
            self.t.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + size + b"\r\n" + payload + b"\r\n0\r\n\r\n"
            )
            return
        self.t.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: "
            + ctype
            + b"\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )


def serve_upstream(port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


# -- targets --------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str  # base URL ending in /v1
    headers: dict[str, str] = field(default_factory=dict)
    run: Running | None = None
    model: str = MODEL  # the name clients ask for


def spawn(name: str, cmd: list[str], work: Path, probe: str, url: str, **env: str) -> Running:
    log = work / f"{name}.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=work
    )
    return wait_ready(Running(name, url, proc, log), probe)


def start_llmux(
    work: Path,
    upstream: str,
    name: str = "llmux",
    exposed: str = MODEL,
    probe: str = "/v1/models",
    **settings: str,
) -> Target:
    """llmux with one OpenAI-type upstream serving ``MODEL`` as ``exposed``; ``settings``
    are extra LLMUX_* variables (a policy, say)."""
    port = free_port()
    config = work / f"{name}.toml"
    config.write_text(
        f'[store]\nbundled_model = ""\n[[upstreams]]\nname = "fast"\ntype = "openai"\n'
        f'url = "{upstream}/v1"\nmodels = {{ "{exposed}" = "{MODEL}" }}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update(
        LLMUX_HOME=str(work / f"{name}-home"),
        LLMUX_HOST=f"127.0.0.1:{port}",
        LLMUX_CONFIG=str(config),
        LLMUX_SERVER__LOG_LEVEL="warning",
        **settings,
    )
    url = f"http://127.0.0.1:{port}"
    log = work / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmux", "serve"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    run = wait_ready(Running(name, url, proc, log), probe)
    return Target(name, url + "/v1", run=run, model=exposed)


def start_llmux_policy(work: Path, upstream: str) -> Target:
    """llmux with a metadata-only policy (the access log): the fast path stays on."""
    return start_llmux(work, upstream, "llmux+policy", LLMUX_SERVER__ACCESS_LOG="true")


def start_llmux_auth(
    work: Path, upstream: str, name: str = "llmux+auth", **settings: str
) -> Target:
    """llmux with access control on; every request carries an API key (verified once,
    then from the 1 s cache, as in production)."""
    target = start_llmux(
        work, upstream, name, probe="/", LLMUX_AUTH__MODE="on",
        LLMUX_AUTH__SECRET="bench-secret-" + "x" * 32, LLMUX_AUTH__ADMIN_PASSWORD="bench password",
        **settings,
    )  # fmt: skip
    assert target.run is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update(LLMUX_HOME=str(work / f"{name}-home"), LLMUX_AUTH__SECRET="bench-secret-" + "x" * 32)
    made = subprocess.run(
        [sys.executable, "-m", "llmux", "keys", "create", "--user", "admin", "--scopes",
         "inference models:read"], env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    target.headers = {"Authorization": "Bearer " + made.stdout.strip().splitlines()[-1]}
    return target


# a request, a token and a concurrency limit for every caller, too high ever to refuse
QUOTA_LIMITS = {
    "LLMUX_LIMITS__REQUESTS_PER_MINUTE": "100000000",
    "LLMUX_LIMITS__TOKENS_PER_MINUTE": "1000000000000",
    "LLMUX_LIMITS__CONCURRENT_REQUESTS": "100000",
}
USAGE_OFF = {"LLMUX_USAGE__ENABLED": "false"}


def redis_env(tag: str) -> dict[str, str]:
    """The local Redis (or $LLMUX_BENCH_REDIS), under a prefix of this run's own."""
    return {
        "LLMUX_REDIS__URL": os.environ.get("LLMUX_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
        "LLMUX_REDIS__PREFIX": f"llmux-bench-{tag}:{os.getpid()}:",
    }


def start_llmux_quotas(work: Path, upstream: str) -> Target:
    """llmux with access control, a request, a token and a concurrency limit on every
    key (high enough never to refuse: each request pays the whole check), counted in
    the local Redis, and usage records: what a production deployment runs."""
    return start_llmux_auth(work, upstream, "llmux+quotas", **redis_env("gw"), **QUOTA_LIMITS)


def start_llmux_bare(work: Path, upstream: str) -> Target:
    """llmux without usage records (on by default): nothing but the relay."""
    return start_llmux(work, upstream, "llmux-bare", **USAGE_OFF)


def start_llmux_renamed(work: Path, upstream: str) -> Target:
    """llmux exposing the upstream's model under another name (rewritten on the fast path)."""
    return start_llmux(work, upstream, "llmux-renamed", exposed="bench-renamed")


def start_litellm(work: Path, upstream: str) -> Target:
    venv = work / "litellm-venv"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        print(f"installing {LITELLM_SPEC} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC], check=True)
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n"
        f"      model: openai/{MODEL}\n      api_base: {upstream}/v1\n"
        "      api_key: sk-bench\n"
    )
    url = f"http://127.0.0.1:{port}"
    run = spawn(
        "litellm",
        [str(binary), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
        work,
        "/health/liveliness",
        url,
        LITELLM_LOG="ERROR",
    )
    return Target("litellm", url + "/v1", {"Authorization": "Bearer sk-bench"}, run)


def start_portkey(work: Path, upstream: str) -> Target:
    folder = work / "portkey"
    entry = folder / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not entry.exists():
        print(f"installing {PORTKEY_SPEC} into {folder} ...", flush=True)
        folder.mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(folder), PORTKEY_SPEC], check=True
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run = spawn(
        "portkey",
        ["node", str(entry), f"--port={port}", "--headless"],
        work,
        "/",
        url,
        NODE_ENV="production",
    )
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{upstream}/v1",
        "Authorization": "Bearer sk-bench",
    }
    return Target("portkey", url + "/v1", headers, run)


# -- load -----------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids += [int(c) for c in children]
    return total / 1024


async def load(
    target: Target, concurrency: int, duration: float, stream: bool, pid: int | None
) -> dict[str, float]:
    body = json.dumps(
        {
            "model": target.model,
            "stream": stream,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    headers = {"Content-Type": "application/json", **target.headers}
    latencies: list[float] = []
    ttfb: list[float] = []
    errors = 0
    peak = 0.0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = target.url + "/chat/completions"

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                first = await resp.content.readany()
                t1 = time.perf_counter()
                rest = await resp.read()
                if resp.status != 200 or not (first or rest):
                    errors += 1
                    return
            latencies.append(time.perf_counter() - t0)
            ttfb.append(t1 - t0)

        end = time.perf_counter() + 0.5  # warm-up: connections, caches
        while time.perf_counter() < end:
            await asyncio.gather(*(one() for _ in range(concurrency)))
        latencies.clear()
        ttfb.clear()
        start = time.perf_counter()
        end = start + duration

        async def worker() -> None:
            while time.perf_counter() < end:
                await one()

        async def sample() -> None:
            nonlocal peak
            while pid is not None and time.perf_counter() < end:
                peak = max(peak, rss_mib(pid))
                await asyncio.sleep(0.25)

        await asyncio.gather(sample(), *(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    return {
        "rps": len(lat) / elapsed,
        "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan"),
        "ttfb_p50_ms": statistics.median(ttfb) * 1000 if ttfb else float("nan"),
        "errors": errors,
        "rss_peak_mib": peak,
    }


# -- choosing the upstream client -----------------------------------------------------


async def client_rps(kind: str, url: str, concurrency: int, duration: float) -> float:
    """Requests/s one shared client of ``kind`` (aiohttp / httpx) gets from the upstream."""
    import httpx

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"Content-Type": "application/json"}
    done = 0
    end = time.perf_counter() + duration
    if kind == "aiohttp":
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:

            async def work_a() -> None:
                nonlocal done
                while time.perf_counter() < end:
                    async with s.post(url, data=body, headers=headers) as r:
                        await r.read()
                    done += 1

            await asyncio.gather(*(work_a() for _ in range(concurrency)))
    else:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits) as c:

            async def work_h() -> None:
                nonlocal done
                while time.perf_counter() < end:
                    await c.post(url, content=body, headers=headers)
                    done += 1

            await asyncio.gather(*(work_h() for _ in range(concurrency)))
    return done / duration


def compare_clients(upstream: str, duration: float) -> None:
    import uvloop

    url = upstream + "/v1/chat/completions"
    for c in (1, 32):
        for kind in ("aiohttp", "httpx"):
            rps = uvloop.run(client_rps(kind, url, c, duration))
            print(f"client {kind} c={c}: {rps:.0f} req/s", flush=True)


# -- main -----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--workdir", type=Path, default=None, help="reused if it has installs")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: llmux+policy,llmux+auth,llmux+quotas,llmux-bare,llmux-renamed,"
        "litellm,portkey",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument(
        "--clients",
        action="store_true",
        help="only compare aiohttp and httpx as the upstream client",
    )
    ap.add_argument("--serve-upstream", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="llmux-bench-gw-"))
    work.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    up = spawn(
        "upstream",
        [sys.executable, __file__, "--serve-upstream", str(up_port)],
        work,
        "/v1/models",
        upstream,
    )
    targets = [Target("direct", upstream + "/v1", run=up)]
    if args.clients:
        try:
            compare_clients(upstream, args.duration)
        finally:
            up.stop()
        return
    starters = {
        "llmux": start_llmux,
        "llmux+policy": start_llmux_policy,
        "llmux+auth": start_llmux_auth,
        "llmux+quotas": start_llmux_quotas,
        "llmux-bare": start_llmux_bare,
        "llmux-renamed": start_llmux_renamed,
        "litellm": start_litellm,
        "portkey": start_portkey,
    }
    try:
        for name, starter in starters.items():
            if name not in skip:
                targets.append(starter(work, upstream))
        time.sleep(2)
        results: dict[str, dict[str, object]] = {}
        for t in targets:
            pid = t.run.proc.pid if t.run and t.name != "direct" else None
            res: dict[str, object] = {"rss_idle_mib": rss_mib(pid) if pid else 0.0}
            for c in levels:
                res[f"c{c}"] = asyncio.run(load(t, c, args.duration, False, pid))
                print(t.name, c, res[f"c{c}"], flush=True)
            res["stream_c1"] = asyncio.run(load(t, 1, args.duration, True, pid))
            results[t.name] = res
        report(results, levels)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for t in targets:
            if t.run:
                t.run.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, dict[str, object]], levels: list[int]) -> None:
    def cell(name: str, key: str, field_: str) -> float:
        value = results[name][key]
        assert isinstance(value, dict)
        return float(value[field_])

    print(
        "\n| target | "
        + " | ".join(f"req/s c={c}" for c in levels)
        + " | added p50 c=1 (ms) | added p99 c=1 (ms) | added TTFB stream (ms) "
        "| RSS idle / load (MiB) |"
    )
    print("|---" * (len(levels) + 5) + "|")
    for name in results:
        row = [f"{cell(name, f'c{c}', 'rps'):.0f}" for c in levels]
        added = [cell(name, "c1", k) - cell("direct", "c1", k) for k in ("p50_ms", "p99_ms")]
        ttfb = cell(name, "stream_c1", "ttfb_p50_ms") - cell("direct", "stream_c1", "ttfb_p50_ms")
        peak = max(cell(name, f"c{c}", "rss_peak_mib") for c in levels)
        print(
            f"| {name} | " + " | ".join(row) + f" | {added[0]:.2f} | {added[1]:.2f} | "
            f"{ttfb:.2f} | {results[name]['rss_idle_mib']:.0f} / {peak:.0f} |"
        )
    for variant in ("llmux+policy", "llmux+auth", "llmux+quotas", "llmux-bare", "llmux-renamed"):
        if variant in results and "llmux" in results:
            extra = cell(variant, "c1", "p50_ms") - cell("llmux", "c1", "p50_ms")
            print(f"{variant} adds {extra:+.3f} ms at the median (c=1) over plain llmux")
            if 32 in levels:
                share = cell(variant, "c32", "rps") / cell("llmux", "c32", "rps")
                print(f"{variant} throughput at c=32: {share:.0%} of plain llmux")
    for name in results:
        if 32 in levels and name.startswith("llmux"):
            ratio = cell(name, "c32", "p99_ms") / cell(name, "c32", "p50_ms")
            print(f"{name} p99 / p50 at c=32: {ratio:.1f}x")
    if "llmux" in results and 32 in levels:
        ours = cell("llmux", "c32", "rps")
        for other in ("portkey", "litellm"):
            if other in results:
                print(f"llmux / {other} at c=32: {ours / cell(other, 'c32', 'rps'):.1f}x")


if __name__ == "__main__":
    main()
