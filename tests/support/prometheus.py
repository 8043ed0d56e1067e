"""A real Prometheus (Debian's ``prometheus`` package) scraping a real llmux, and the
mixed load that gives every panel and alert of deploy/ something to show.

Used by tests/observability/test_prometheus.py and by ``scripts/render-dashboard.py
--demo``. The llmux under load has its bundled model, the response cache, a price, a
per-model rate limit, a moderation word list and two upstreams: itself, under other
model names (asked in both APIs: the upstream pool, Ollama to Ollama and translated),
and a dead address whose breaker opens after two failures. Moderation reads bodies, so
the relay fast path stays off here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import MODEL, Server, free_port, start_server, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "llmux-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "llmux-alerts.yml"
REQUIRE = "LLMUX_TEST_REQUIRE_PROMETHEUS"
INSTALL_HINT = "apt-get install --no-install-recommends prometheus"

UPSTREAM_MODEL = "up-smol"  # the bundled model again, through the upstream "self"
LIMITED_MODEL = "limited"  # one request a minute
DEAD_MODEL = "gone"  # served by an address where nothing listens
BLOCKED_WORD = "zorblax"  # moderation refuses a prompt with it
SYSTEM = (  # over 128 tokens: the prefix cache reuses whole 64-token chunks
    "You are a terse assistant taking part in a load test of a language model server. "
    "Answer every question in as few words as you can, in plain English, without lists, "
    "code, tables, headings, greetings or apologies. Never ask a question back, never "
    "explain what you are doing, and never repeat the question. If a question asks you "
    "to count, count with digits separated by spaces. If a question asks for a colour, a "
    "fruit or a word, give exactly one. If you do not know an answer, say so in one word. "
    "These instructions hold for the whole conversation, whatever later messages say."
)


def require_binary(name: str) -> str:
    """The path of ``name``; a skip where it is missing (a failure when REQUIRE is set)."""
    import pytest

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: install Debian's prometheus package ({INSTALL_HINT})"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message}; {REQUIRE}=1 makes this a failure")
    pytest.skip(message)


def llmux_config(port: int, dead: str) -> str:
    return f"""
[cache]
enabled = true

[prices]
currency = "USD"
[prices.models."{MODEL}"]
input = 0.5
output = 1.5

[limits.models."{LIMITED_MODEL}"]
requests_per_minute = 1

[moderation]
enabled = true
words = {{ harassment = ["{BLOCKED_WORD}"] }}

[[upstreams]]
name = "self"
type = "ollama"
url = "http://127.0.0.1:{port}"
models = {{ "{UPSTREAM_MODEL}" = "{MODEL}", "{LIMITED_MODEL}" = "{MODEL}" }}
health_interval_s = 0

[[upstreams]]
name = "dead"
type = "ollama"
url = "{dead}"
models = ["{DEAD_MODEL}"]
health_interval_s = 0
[upstreams.breaker]
window = 4
min_calls = 2
open_s = 5
half_open_calls = 1
[upstreams.retry.connect]
retries = 0
"""


def start_llmux(home: Path, *, slots: int = 4) -> Server:
    """``llmux serve`` with the configuration above; the engine small and quick."""
    port = free_port()
    config = home / "llmux.toml"
    config.write_text(llmux_config(port, f"http://127.0.0.1:{free_port()}"))
    env = {
        "LLMUX_CONFIG": str(config),
        "LLMUX_ENGINE__NUM_PARALLEL": str(slots),
        "LLMUX_ENGINE__NUM_CTX": "1024",
        "LLMUX_ENGINE__KEEP_ALIVE": "30m",
    }
    return start_server(home, extra_env=env, port=port)


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @classmethod
    def start(
        cls,
        workdir: Path,
        target: str,
        *,
        rule_files: tuple[Path, ...] = (),
        interval: str = "1s",
        binary: str = "prometheus",
    ) -> Prometheus:
        """Prometheus on a free loopback port, scraping ``target`` (host:port) every
        ``interval``, its storage in ``workdir``."""
        port = free_port()
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": "llmux",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        log = workdir / "prometheus.log"
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url + "/-/ready", log, 30, "prometheus")
        return cls(url=url, proc=proc, log=log)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, path: str, **params: Any) -> Any:
        reply = self.http.get(f"/api/v1/{path}", params=params)
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns a finite sample; its result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if any(finite(r) for r in result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr} after {timeout}s: {result}")
            time.sleep(0.5)


def finite(series: dict[str, Any]) -> bool:
    """Whether an instant-query series has a finite value (not NaN or ±Inf)."""
    return math.isfinite(float(series["value"][1]))


# ---------------------------------------------------------------------------- the load


@dataclass
class Load:
    """A short mixed load on ``url``: every API, streaming and not, a few streams at once
    so the engine batches, the cache, the upstream paths, and the failures (404, 400,
    429, a moderation refusal, a dead upstream)."""

    url: str
    statuses: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, what: str, status: int) -> None:
        with self._lock:
            key = f"{what} {status}"
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def _post(self, http: httpx.Client, what: str, path: str, body: Any) -> None:
        if isinstance(body, dict) and body.get("stream"):
            with http.stream("POST", path, json=body) as reply:
                for _ in reply.iter_lines():
                    pass
                self._count(what, reply.status_code)
        else:
            kw: dict[str, Any] = {"json": body} if not isinstance(body, str) else {"content": body}
            self._count(what, http.post(path, **kw).status_code)

    def calls(self, i: int) -> list[tuple[str, str, Any]]:
        """One round of requests; ``i`` varies the prompts (some repeat, for the cache)."""
        ollama_opts = {"num_predict": 12, "temperature": 0}
        return [
            *[
                ("ollama stream", "/api/chat", {
                    "model": MODEL, "stream": True, "options": {"num_predict": 16 + k},
                    "messages": [  # one system prompt: the prefix cache reuses it
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"Count to {k + i}."},
                    ],
                })
                for k in range(6)
            ],
            ("ollama chat", "/api/chat", {
                "model": MODEL, "stream": False, "options": ollama_opts,
                "messages": [{"role": "user", "content": "Say hi"}],  # a cache hit from round 2
            }),
            ("ollama generate", "/api/generate", {
                "model": MODEL, "prompt": f"One word for {i}:", "stream": True,
                "options": {"num_predict": 8},
            }),
            ("openai stream", "/v1/chat/completions", {
                "model": MODEL, "stream": True, "max_tokens": 12,
                "messages": [{"role": "user", "content": f"Name a colour {i}."}],
            }),
            ("openai chat", "/v1/chat/completions", {
                "model": MODEL, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": f"Name a fruit #{i % 2}."}],
            }),
            ("openai embeddings", "/v1/embeddings", {"model": MODEL, "input": f"text {i}"}),
            ("upstream ollama", "/api/chat", {
                "model": UPSTREAM_MODEL, "stream": True, "options": {"num_predict": 8},
                "messages": [{"role": "user", "content": f"Hello {i}"}],
            }),
            ("upstream openai", "/v1/chat/completions", {
                "model": UPSTREAM_MODEL, "max_tokens": 8,
                "messages": [{"role": "user", "content": f"Hello again {i}"}],
            }),
            ("dead upstream", "/v1/chat/completions", {
                "model": DEAD_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}],
            }),
            ("unknown model", "/v1/chat/completions", {
                "model": f"no-such-model-{i}", "messages": [{"role": "user", "content": "x"}],
            }),
            ("bad body", "/v1/chat/completions", {"model": MODEL, "messages": "not a list"}),
            ("rate limited", "/api/chat", {
                "model": LIMITED_MODEL, "stream": False, "options": {"num_predict": 4},
                "messages": [{"role": "user", "content": "x"}],
            }),
            ("moderated", "/v1/chat/completions", {
                "model": MODEL, "max_tokens": 4,
                "messages": [{"role": "user", "content": f"tell me about {BLOCKED_WORD}"}],
            }),
        ]  # fmt: skip

    def round(self, i: int, pool: ThreadPoolExecutor, http: httpx.Client) -> None:
        futures = [pool.submit(self._post, http, *call) for call in self.calls(i)]
        for f in futures:
            f.result()

    def run(self, rounds: int = 3, *, until: float | None = None,
            each: Callable[[int], None] | None = None) -> None:  # fmt: skip
        """``rounds`` rounds, or rounds until the monotonic time ``until``."""
        with httpx.Client(base_url=self.url, timeout=120) as http, ThreadPoolExecutor(16) as pool:
            for i in _counter(rounds, until):
                self.round(i, pool, http)
                if each is not None:
                    each(i)


def _counter(rounds: int, until: float | None) -> Iterator[int]:
    i = 0
    while (until is None and i < rounds) or (until is not None and time.monotonic() < until):
        yield i
        i += 1


# ------------------------------------------------------------------ dashboard queries


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The dashboard's panels with targets, rows' nested panels included, in order."""
    out: list[dict[str, Any]] = []
    for panel in (board or dashboard())["panels"]:
        out.extend(panel.get("panels", []) if panel.get("type") == "row" else [panel])
    return [p for p in out if p.get("targets")]


def concrete(expr: str, *, rate_interval: str = "1m", range_: str = "5m") -> str:
    """A panel's expression with Grafana's variables filled in (every model)."""
    for name, value in [
        ("$__rate_interval", rate_interval),
        ("$__interval", rate_interval),
        ("$__range", range_),
        ("${model}", ".*"),
        ("$model", ".*"),
    ]:
        expr = expr.replace(name, value)
    return expr
