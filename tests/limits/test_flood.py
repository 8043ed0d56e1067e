"""Four real ``llmux serve`` processes sharing the real Redis and one PostgreSQL database,
flooded by many clients at once on one key: requests, tokens and concurrency never go
past what the limits allow, whichever replica a request reaches. Retry-After is exact
across replicas, and the openai SDK at its default retries and the usual retry loops
(Python and Node) get through a 429 by themselves.

The concurrency check counts at the backend: an upstream that holds every call for
300 ms and records how many run at once (``tests/upstream/scripted.py``)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MODEL, Server, fresh_pg_database, start_server
from tests.upstream.scripted import Scripted

PROMPT = [{"role": "user", "content": "Count to three."}]


@dataclass
class Cluster:
    servers: list[Server]
    scripted: Scripted
    admin: dict[str, str]

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "llmux", *args], env=self.servers[0].env,
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.strip().splitlines()[-1]

    def key(self, **limits: int) -> tuple[str, str]:
        """A new key with its own limits (through the admin API), known to every replica."""
        text = self.cli("keys", "create", "--user", "admin", "--scopes", "inference")
        key_id = text.removeprefix("sk-llmux-").split("_")[0]
        r = httpx.put(f"{self.servers[1].url}/admin/limits/key:{key_id}", json=limits,
                      headers=self.admin, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        time.sleep(1.0)  # the other replicas reread limits every 0.5 s
        return text, key_id


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Cluster]:
    scripted = Scripted().start()
    db = fresh_pg_database("llmux_flood")
    url = next(db)
    home = tmp_path_factory.mktemp("flood")
    config = home / "llmux.toml"
    config.write_text(
        textwrap.dedent(f"""
        [auth]
        mode = "on"
        secret = "{secrets.token_urlsafe(32)}"
        admin_password = "flood admin password"
        [storage]
        database_url = "{url}"
        [redis]
        url = "{redis_url}"
        prefix = "llmux-test:{uuid.uuid4().hex[:10]}:"
        [limits]
        refresh_s = 0.5
        [usage]
        flush_s = 0.2
        [[upstreams]]
        name = "scripted"
        type = "openai"
        url = "{scripted.url}/v1"
        models = ["held", "quick"]
    """)
    )
    servers = [
        start_server(tmp_path_factory.mktemp(f"flood-{i}"), extra_env={"LLMUX_CONFIG": str(config)})
        for i in range(4)
    ]
    made = Cluster(servers, scripted, {})
    text = made.cli("keys", "create", "--user", "admin", "--scopes", "inference admin")
    made.admin = {"Authorization": f"Bearer {text}"}
    yield made
    for s in servers:
        s.stop()
    scripted.stop()
    next(db, None)


async def flood(
    cluster: Cluster, key: str, body: dict[str, object], seconds: float, workers: int
) -> tuple[list[httpx.Response], float]:
    """``workers`` clients round-robin over the replicas for ``seconds``; every answer."""
    answers: list[httpx.Response] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=120) as client:
        began = time.monotonic()
        stop = began + seconds

        async def worker(i: int) -> None:
            n = i
            while time.monotonic() < stop:
                server = cluster.servers[n % len(cluster.servers)]
                n += 1
                r = await client.post(f"{server.url}/v1/chat/completions", json=body,
                                      headers=headers)  # fmt: skip
                answers.append(r)
                if r.status_code == 429:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker(i) for i in range(workers)))
        return answers, time.monotonic() - began


def test_rpm_and_tpm_are_never_over_admitted_by_four_replicas(cluster: Cluster) -> None:
    rpm, tpm = 60, 2000
    key, _ = cluster.key(requests_per_minute=rpm, tokens_per_minute=tpm)
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 2, "temperature": 0}
    answers, elapsed = asyncio.run(flood(cluster, key, body, 10.0, 32))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == len(answers), {r.status_code for r in answers}
    assert refused, "the flood never reached a limit"
    # GCRA admits the burst (the limit) and then one unit per interval, never more
    assert len(ok) <= rpm + rpm * elapsed / 60 + 1, (len(ok), elapsed)
    used = [r.json()["usage"]["total_tokens"] for r in ok]
    assert sum(used) <= tpm + tpm * elapsed / 60 + max(used), (sum(used), elapsed)
    # and the token limit really was the one that bound (the requests alone allow more)
    assert len(ok) < rpm + rpm * elapsed / 60
    for r in refused[:50]:
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-ratelimit-limit-tokens"] == str(tpm)
        assert r.headers["x-ratelimit-limit-requests"] == str(rpm)
    assert ok[0].headers["x-ratelimit-limit-tokens"] == str(tpm)  # on admitted ones too


def test_concurrency_is_never_over_admitted_by_four_replicas(cluster: Cluster) -> None:
    key, _ = cluster.key(concurrent_requests=3)
    for stream in (False, True):
        cluster.scripted.peak["held"] = 0
        body = {"model": "held", "messages": PROMPT, "stream": stream}
        answers, _ = asyncio.run(flood(cluster, key, body, 4.0, 24))
        statuses = {r.status_code for r in answers}
        assert statuses == {200, 429}, statuses
        assert 2 <= cluster.scripted.peak["held"] <= 3, cluster.scripted.peak["held"]
        busy = next(r for r in answers if r.status_code == 429)
        assert busy.headers["retry-after"] == "1"
        assert "at once" in busy.json()["error"]["message"]


def test_retry_after_is_exact_across_replicas(cluster: Cluster) -> None:
    key, _ = cluster.key(requests_per_minute=30)  # one every 2 s once the burst is spent
    a, b = cluster.servers[0].url, cluster.servers[3].url
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "quick", "messages": PROMPT}
    with httpx.Client(timeout=30, headers=headers) as client:
        refused = None
        for _ in range(40):
            r = client.post(f"{a}/v1/chat/completions", json=body)
            if r.status_code == 429:
                refused = r
                break
        assert refused is not None
        wait_ms = int(refused.headers["retry-after-ms"])
        assert 1000 < wait_ms <= 2000
        assert int(refused.headers["retry-after"]) == -(-wait_ms // 1000)
        time.sleep((wait_ms - 150) / 1000)  # 150 ms early: still refused, nothing consumed
        early = client.post(f"{b}/v1/chat/completions", json=body)
        assert early.status_code == 429
        rest = int(early.headers["retry-after-ms"])
        assert 100 <= rest <= 200, rest  # the same moment, told again within 50 ms
        time.sleep(rest / 1000)
        assert client.post(f"{b}/v1/chat/completions", json=body).status_code == 200


def test_the_openai_sdk_and_retry_loops_recover_from_a_429(
    cluster: Cluster, tmp_path: Path
) -> None:
    key, _ = cluster.key(requests_per_minute=60)  # one a second after the burst
    url = cluster.servers[2].url
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "quick", "messages": PROMPT}

    def exhaust() -> None:
        for _ in range(80):
            if (
                httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers).status_code
                == 429
            ):
                return
        raise AssertionError("the limit never refused")

    exhaust()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)  # default: two retries
    reply = client.chat.completions.create(model="quick", messages=PROMPT)  # type: ignore[arg-type]
    assert reply.choices[0].message.content

    # a retry loop the way DeepSeek's and OpenAI's docs write one
    exhaust()
    bare = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

    def call_api_with_retry(max_retries: int = 5) -> str:
        for attempt in range(max_retries):
            try:
                done = bare.chat.completions.create(model="quick", messages=PROMPT)  # type: ignore[arg-type]
                return done.choices[0].message.content or ""
            except openai.RateLimitError:
                time.sleep(2**attempt)
        raise RuntimeError("gave up")

    assert call_api_with_retry()

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    # Node takes a second or two to start: a key whose limit frees one request in 10 s
    key, _ = cluster.key(requests_per_minute=6)
    headers = {"Authorization": f"Bearer {key}"}
    exhaust()
    script = tmp_path / "retry.mjs"
    script.write_text(
        textwrap.dedent("""
        const [url, key] = process.argv.slice(2);
        async function callWithRetry(body, maxRetries = 5) {
          for (let attempt = 0; attempt < maxRetries; attempt++) {
            const res = await fetch(url + "/v1/chat/completions", {
              method: "POST",
              headers: {"Content-Type": "application/json", Authorization: "Bearer " + key},
              body: JSON.stringify(body),
            });
            if (res.status !== 429) return {status: res.status, body: await res.json(), attempt};
            const wait = Number(res.headers.get("retry-after") || 2 ** attempt);
            await new Promise((resolve) => setTimeout(resolve, wait * 1000));
          }
          throw new Error("gave up");
        }
        const out = await callWithRetry({model: "quick", messages: [{role: "user", content: "hi"}]});
        console.log(JSON.stringify(out));
    """)
    )
    done = subprocess.run([node, str(script), url, key], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    out = json.loads(done.stdout)
    assert out["status"] == 200 and out["attempt"] >= 1 and out["body"]["choices"]
