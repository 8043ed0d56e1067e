"""The response cache end to end: real ``llmux serve`` processes with the bundled model
and the real Redis. A temperature-0 request in each API is answered by the model once,
then from L1 (as a stream after a JSON reply); after a restart (a new process, the same
Redis) from L2, then from L1 again. The official ``openai`` and ``ollama`` clients parse
the hits; the header and the usage ledger say what happened. The replies are compared
with the first one, never with fixed words."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from openai import OpenAI

from tests.conftest import MODEL, Server, start_server

pytestmark = pytest.mark.model
OPTIONS = {"temperature": 0, "num_predict": 12}
MESSAGES: Any = [{"role": "user", "content": "Name two colours."}]
PROMPT = "The sky is"


class Clients:
    """The official clients on one server, with the X-Llmux-Cache of every reply."""

    def __init__(self, server: Server) -> None:
        self.states: list[str] = []
        hooks = {"response": [self._seen]}
        self.http = httpx.Client(base_url=server.url, timeout=120, event_hooks=hooks)
        self.openai = OpenAI(base_url=server.url + "/v1", api_key="none", http_client=self.http)
        self.ollama = ollama.Client(host=server.url, timeout=120, event_hooks=hooks)

    def _seen(self, response: httpx.Response) -> None:
        self.states.append(response.headers.get("x-llmux-cache", "-"))

    def last(self) -> str:
        return self.states[-1]

    def close(self) -> None:
        self.http.close()


def ollama_chat(c: Clients, stream: bool) -> str:
    if stream:
        parts = list(c.ollama.chat(model=MODEL, messages=MESSAGES, options=OPTIONS, stream=True))
        assert parts[-1].done and parts[-1].eval_count
        return "".join(p.message.content for p in parts)
    r = c.ollama.chat(model=MODEL, messages=MESSAGES, options=OPTIONS)
    assert r.done and r.eval_count and r.prompt_eval_count is not None
    return r.message.content or ""


def ollama_generate(c: Clients, stream: bool) -> str:
    if stream:
        parts = list(c.ollama.generate(model=MODEL, prompt=PROMPT, options=OPTIONS, stream=True))
        assert parts[-1].done and parts[-1].context
        return "".join(p.response for p in parts)
    r = c.ollama.generate(model=MODEL, prompt=PROMPT, options=OPTIONS)
    assert r.done and r.context
    return r.response


def openai_chat(c: Clients, stream: bool) -> str:
    if stream:
        parts = list(
            c.openai.chat.completions.create(
                model=MODEL, messages=MESSAGES, temperature=0, max_tokens=12, stream=True,
                stream_options={"include_usage": True},
            )
        )  # fmt: skip
        assert parts[-1].usage is not None
        return "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    r = c.openai.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=12
    )
    assert r.usage is not None
    return r.choices[0].message.content or ""


def openai_completions(c: Clients, stream: bool) -> str:
    if stream:
        parts = list(
            c.openai.completions.create(
                model=MODEL, prompt=PROMPT, temperature=0, max_tokens=12, stream=True
            )
        )
        return "".join(p.choices[0].text for p in parts if p.choices)
    r = c.openai.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=12)
    assert r.usage is not None
    return r.choices[0].text


CALLS: dict[str, Callable[[Clients, bool], str]] = {
    "/api/chat": ollama_chat,
    "/api/generate": ollama_generate,
    "/v1/chat/completions": openai_chat,
    "/v1/completions": openai_completions,
}


def cached_usage_shows(c: Clients) -> None:
    """A hit reports its whole prompt as cached in OpenAI's and DeepSeek's fields."""
    r = c.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 12},
    )
    assert r.headers["x-llmux-cache"].startswith("hit-")
    usage = r.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] > 0
    assert usage["prompt_cache_hit_tokens"] == usage["prompt_tokens"]
    assert usage["prompt_cache_miss_tokens"] == 0


def test_served_from_l1_then_from_redis_after_a_restart(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    env = {
        "LLMUX_CACHE__ENABLED": "true",
        "LLMUX_CACHE__REDIS": "true",
        "LLMUX_REDIS__URL": redis_url,
        "LLMUX_REDIS__PREFIX": prefix,
        "LLMUX_USAGE__FLUSH_S": "0.1",
        "LLMUX_ENGINE__KEEP_ALIVE": "30m",
    }
    first: dict[str, str] = {}
    server = start_server(tmp_path, extra_env=env)
    try:
        c = Clients(server)
        for path, call in CALLS.items():
            first[path] = call(c, False)
            assert first[path] and c.last() == "miss", path
            assert call(c, True) == first[path], path  # the stream replays the JSON reply
            assert c.last() == "hit-l1", path
        cached_usage_shows(c)
        c.close()
    finally:
        server.stop()
    server = start_server(tmp_path, extra_env=env)  # a new process: L1 empty, Redis kept
    try:
        c = Clients(server)
        for path, call in CALLS.items():
            assert call(c, True) == first[path], path
            assert c.last() == "hit-l2", path
            assert call(c, False) == first[path], path
            assert c.last() == "hit-l1", path
        c.close()
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "llmux.db") as conn:
        rows = conn.execute(
            "SELECT route, cache, prompt_tokens, cached_tokens, completion_tokens "
            "FROM usage_records ORDER BY id"
        ).fetchall()
    by_route: dict[str, list[Any]] = {}
    for route, cache, prompt, cached, completion in rows:
        by_route.setdefault(route, []).append(cache)
        if cache is not None:
            assert cached == prompt > 0 and completion > 0
    assert by_route["/api/chat"] == [None, "l1", "l2", "l1"]
    assert by_route["/api/generate"] == [None, "l1", "l2", "l1"]
    assert by_route["/v1/completions"] == [None, "l1", "l2", "l1"]
    assert by_route["/v1/chat/completions"] == [None, "l1", "l1", "l2", "l1"]
