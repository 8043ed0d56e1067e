"""The relay fast path goes through the policy chain: an in-process llmux (no local
model) in front of the real upstream llmux process with the bundled model. A
metadata-only policy keeps the fast path and gets each reply's usage; a policy that
needs bodies switches it off; a renamed model stays on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.upstream.settings import UpstreamSettings
from tests.conftest import MODEL, Server
from tests.support.fakes import FakeBackend
from tests.support.inprocess import App, RecordingPolicy, in_process

ASK = [{"role": "user", "content": "Say hi"}]
OPTIONS = {"temperature": 0, "num_predict": 4}


def upstreams(real: Server) -> list[UpstreamSettings]:
    return [
        UpstreamSettings(
            name="up-ol", type="ollama", url=real.url, models={MODEL: MODEL, "renamed-ol": MODEL}
        ),
        UpstreamSettings(
            name="up-oa", type="openai", url=real.url + "/v1", models={"renamed-oa": MODEL}
        ),
    ]


@pytest.fixture(scope="module")
def relayed(real_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    home: Path = tmp_path_factory.mktemp("relay-policies")
    with in_process(
        home,
        backend=FakeBackend(model_names=()),
        policies=[RecordingPolicy()],
        upstreams=upstreams(real_upstream),
    ) as app:
        yield app


def last_seen(app: App) -> Any:
    return app.gateway.policies[0].seen[-1]  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", [MODEL, "renamed-ol"])
def test_ollama_fast_path_reports_usage(relayed: App, model: str) -> None:
    body = {"model": model, "messages": ASK, "options": OPTIONS, "stream": False}
    r = relayed.client.post("/api/chat", json=body, headers={"X-Request-Id": "relay-1"})
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["model"] == model, "the upstream's name is renamed back"
    seen = last_seen(relayed)
    assert seen.op.backend == "relay" and not seen.op.has_body
    assert seen.ctx.request_id == "relay-1" and r.headers["x-request-id"] == "relay-1"
    assert seen.outcome.ok and seen.outcome.finish_reason == reply["done_reason"]
    assert seen.outcome.usage.prompt_tokens == reply["prompt_eval_count"] > 0
    assert seen.outcome.usage.completion_tokens == reply["eval_count"] > 0
    r = relayed.client.post("/api/chat", json={**body, "stream": True})
    lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
    assert {x["model"] for x in lines} == {model} and lines[-1]["done"]
    seen = last_seen(relayed)
    assert seen.op.backend == "relay" and seen.op.stream
    assert seen.outcome.usage.completion_tokens == lines[-1]["eval_count"] > 0


def test_openai_fast_path_asks_for_usage_and_hides_it(relayed: App) -> None:
    body = {"model": "renamed-oa", "messages": ASK, "max_tokens": 4, "temperature": 0}
    r = relayed.client.post("/v1/chat/completions", json={**body, "stream": True})
    events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]")
    assert all(e["choices"] for e in events), "the usage chunk the client did not ask for is gone"
    assert {e["model"] for e in events} == {"renamed-oa"}
    seen = last_seen(relayed)
    assert seen.op.backend == "relay" and seen.outcome.ok
    assert seen.outcome.usage.prompt_tokens > 0 and seen.outcome.usage.completion_tokens > 0
    asked = {**body, "stream": True, "stream_options": {"include_usage": True}}
    r = relayed.client.post("/v1/chat/completions", json=asked)
    events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    usage = events[-1]["usage"]
    assert events[-1]["choices"] == [] and usage["completion_tokens"] > 0
    assert last_seen(relayed).outcome.usage.completion_tokens == usage["completion_tokens"]
    whole = relayed.client.post("/v1/chat/completions", json=body).json()
    assert whole["model"] == "renamed-oa"
    assert last_seen(relayed).outcome.usage.prompt_tokens == whole["usage"]["prompt_tokens"]


def test_a_policy_that_needs_bodies_turns_the_fast_path_off(
    real_upstream: Server, tmp_path: Path
) -> None:
    reader = RecordingPolicy(needs_body=True)
    with in_process(
        tmp_path,
        backend=FakeBackend(model_names=()),
        policies=[reader],
        upstreams=upstreams(real_upstream),
    ) as app:
        body = {"model": "renamed-ol", "messages": ASK, "options": OPTIONS, "stream": False}
        r = app.client.post("/api/chat", json=body)
        assert r.status_code == 200 and r.json()["model"] == "renamed-ol"
        seen = reader.seen[-1]
        assert seen.op.backend == "pool" and seen.op.requests[0].messages[0].content == "Say hi"
        assert seen.outcome is not None and seen.outcome.usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_rate_limit_refuses_on_the_fast_path_too(
    real_upstream: Server, tmp_path: Path, stream: bool
) -> None:
    from llmux.config import LimitsSettings
    from llmux.limits.gcra import MemoryLimiter
    from llmux.limits.policy import Quotas

    limits = Quotas(LimitsSettings(requests_per_minute=1), MemoryLimiter())
    with in_process(tmp_path, backend=FakeBackend(model_names=()), policies=[limits],
                    upstreams=upstreams(real_upstream)) as app:  # fmt: skip
        body = {"model": "renamed-oa", "messages": ASK, "max_tokens": 4, "stream": stream}
        assert app.client.post("/v1/chat/completions", json=body).status_code == 200
        r = app.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) >= 59
