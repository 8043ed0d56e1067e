"""Token accounting on real processes: 1,000 mixed requests (both APIs, streaming or
not, cancelled halfway; the local engine, a second ``llmux serve`` as an Ollama and as
an OpenAI upstream, and a scripted upstream of each type; fast path and translated)
through one ``llmux serve`` with a token limit in the real Redis. Afterwards the tokens
the limit charged equal the tokens in the usage records exactly, and every request has
its record. The model runs about 5 requests a second on two cores, so most of the
thousand go to the scripted upstreams, which answer at once with their own usage."""

from __future__ import annotations

import asyncio
import itertools
import random
import textwrap
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, start_server
from tests.upstream.scripted import Scripted

PROMPT = [{"role": "user", "content": "Name a colour."}]
N = int(__import__("os").environ.get("ACCT_N", "1000"))


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[Server, str]]:
    scripted = Scripted().start()
    upstream = start_server(tmp_path_factory.mktemp("acct-up"),
                            extra_env={"LLMUX_ENGINE__NUM_PARALLEL": "4"})  # fmt: skip
    home = tmp_path_factory.mktemp("acct")
    prefix = f"llmux-test:{uuid.uuid4().hex[:10]}:"
    config = home / "llmux.toml"
    config.write_text(
        textwrap.dedent(f"""
        [engine]
        num_parallel = 4
        [redis]
        url = "{redis_url}"
        prefix = "{prefix}"
        [limits]
        tokens_per_minute = 1000000000
        [usage]
        flush_s = 0.2
        [[upstreams]]
        name = "up-ollama"
        type = "ollama"
        url = "{upstream.url}"
        models = {{ "up-ol" = "{MODEL}" }}
        [[upstreams]]
        name = "up-openai"
        type = "openai"
        url = "{upstream.url}/v1"
        models = {{ "up-oa" = "{MODEL}" }}
        [[upstreams]]
        name = "s-ollama"
        type = "ollama"
        url = "{scripted.url}"
        models = ["quick-ol"]
        [[upstreams]]
        name = "s-openai"
        type = "openai"
        url = "{scripted.url}/v1"
        models = ["quick-oa"]
    """)
    )
    gateway = start_server(home, extra_env={"LLMUX_CONFIG": str(config)})
    yield gateway, prefix
    gateway.stop()
    upstream.stop()
    scripted.stop()


async def one(client: httpx.AsyncClient, url: str, api: str, model: str, mode: str) -> None:
    stream = mode != "whole"
    if api == "ollama":
        path = "/api/chat"
        body = {"model": model, "messages": PROMPT, "stream": stream,
                "options": {"num_predict": 12 if mode == "cancel" else 3}}  # fmt: skip
    else:
        path = "/v1/chat/completions"
        body = {"model": model, "messages": PROMPT, "stream": stream,
                "max_tokens": 12 if mode == "cancel" else 3}  # fmt: skip
    if not stream:
        r = await client.post(url + path, json=body)
        assert r.status_code == 200, r.text
        return
    async with client.stream("POST", url + path, json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if mode == "cancel" and line.strip() and ":" in line:
                break  # the first piece: hang up halfway


def test_charged_tokens_equal_the_usage_records(servers: tuple[Server, str]) -> None:
    import redis

    gateway, prefix = servers

    def kinds(*models: str) -> list[tuple[str, str, str]]:
        return list(itertools.product(("ollama", "openai"), models, ("whole", "stream", "cancel")))

    real, quick = kinds(MODEL, "up-ol", "up-oa"), kinds("quick-ol", "quick-oa")
    plan = [real[i % len(real)] for i in range(N // 8)]  # every real kind, 6-7 times
    plan += [quick[i % len(quick)] for i in range(N - len(plan))]
    random.Random(7).shuffle(plan)

    async def run() -> None:
        queue = iter(plan)
        async with httpx.AsyncClient(timeout=120) as client:

            async def worker() -> None:
                for api, model, mode in queue:
                    await one(client, gateway.url, api, model, mode)

            await asyncio.gather(*(worker() for _ in range(12)))

    asyncio.run(run())
    tally = f"{prefix}tpm:addr:127.0.0.1:charged"
    r = redis.Redis.from_url(servers[0].env.get("LLMUX_REDIS__URL") or "redis://127.0.0.1:6379/0")
    deadline = time.monotonic() + 30
    while True:  # the last records and settlements land within a fraction of a second
        report = httpx.get(f"{gateway.url}/admin/usage?group_by=backend", timeout=10).json()
        total = report["total"]
        charged = int(r.get(tally) or 0)
        done = total["requests"] == N and charged == total["total_tokens"]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert total["requests"] == N, report
    assert charged == total["prompt_tokens"] + total["completion_tokens"], (charged, total)
    backends = {row["backend"]: row["requests"] for row in report["data"]}
    assert set(backends) == {"local", "pool", "relay"}, backends  # every path was taken
    assert total["completion_tokens"] > 0 and total["prompt_tokens"] > N
