"""The relay fast path keeps its records: an in-process llmux (no local model) in front
of the scripted upstream. The record names the relay and the member, its prompt hash is
the keyed hash of the body as the client sent it and its response hash that of the
bytes relayed; the translating path (fast path off) is recorded as the pool."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.audit.record import prompt_hash
from llmux.auth.secrets import Keyring, load_master
from llmux.upstream.settings import UpstreamSettings
from tests.support.fakes import FakeBackend
from tests.support.inprocess import App, in_process
from tests.upstream.scripted import Scripted

ASK = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    server = Scripted().start()
    yield server
    server.stop()


@pytest.fixture
def app(scripted: Scripted, tmp_path: Path) -> Iterator[App]:
    ups = [
        UpstreamSettings(name="s-ol", type="ollama", url=scripted.url, models=["fast-ol"]),
        UpstreamSettings(name="s-oa", type="openai", url=scripted.url + "/v1",
                         models=["fast-oa"]),
        UpstreamSettings(name="s-slow", type="ollama", url=scripted.url, models=["pool-ol"],
                         fast_path=False),
    ]  # fmt: skip
    with in_process(tmp_path, backend=FakeBackend(model_names=()), upstreams=ups,
                    audit=True) as app:  # fmt: skip
        yield app


def record(app: App, request_id: str) -> dict[str, Any]:
    found = app.client.get("/admin/audit", params={"request_id": request_id}).json()["data"]
    assert len(found) == 1, found
    return dict(found[0])


def keyed(app: App, data: bytes) -> str:
    return prompt_hash(Keyring(load_master(None, app.settings.home_dir)).audit, data)


@pytest.mark.parametrize("stream", [True, False])
def test_the_ollama_fast_path_is_recorded(app: App, stream: bool) -> None:
    body = json.dumps({"model": "fast-ol", "messages": ASK, "stream": stream}).encode()
    r = app.client.post("/api/chat", content=body, headers={"X-Request-Id": "fast-1"})
    assert r.status_code == 200, r.text
    rec = record(app, "fast-1")
    assert (rec["backend"], rec["upstream"], rec["model"]) == ("relay", "s-ol", "fast-ol")
    assert rec["prompt_hash"] == keyed(app, body)
    assert rec["response_hash"] == keyed(app, r.content), "the bytes the client got"
    assert rec["status"] == 200 and rec["completion_tokens"] == 3 and rec["stream"] == stream


def test_the_openai_fast_path_is_recorded(app: App) -> None:
    body = json.dumps({"model": "fast-oa", "messages": ASK, "stream": True}).encode()
    r = app.client.post("/v1/chat/completions", content=body,
                        headers={"X-Request-Id": "fast-2"})  # fmt: skip
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    rec = record(app, "fast-2")
    assert (rec["backend"], rec["upstream"], rec["api"]) == ("relay", "s-oa", "openai")
    assert rec["prompt_hash"] == keyed(app, body) and rec["prompt_tokens"] > 0


def test_the_translating_path_is_recorded_as_the_pool(app: App) -> None:
    body = json.dumps({"model": "pool-ol", "messages": ASK, "stream": False}).encode()
    r = app.client.post("/api/chat", content=body, headers={"X-Request-Id": "pool-1"})
    assert r.status_code == 200, r.text
    rec = record(app, "pool-1")
    assert (rec["backend"], rec["upstream"]) == ("pool", "s-slow")
    assert rec["prompt_hash"] == keyed(app, body)
