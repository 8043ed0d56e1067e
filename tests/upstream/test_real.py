"""Clients of each API through the gateway to a real llmux upstream, addressed as an
Ollama-type and as an OpenAI-type server, streaming and not."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from tests.conftest import Server

MSG = [{"role": "user", "content": "Say hi"}]
# smollm2:135m via real-ollama (discovered, fast path for native clients), ol-smol via an
# Ollama-type upstream with a renamed model (translated), oa-smol via an OpenAI-type one
NAMES = ["smollm2:135m", "ol-smol", "oa-smol"]


@pytest.mark.parametrize("model", NAMES)
def test_ollama_client_chat(gateway: Server, model: str) -> None:
    client = ollama.Client(host=gateway.url)
    reply = client.chat(model=model, messages=MSG, options={"num_predict": 4, "seed": 1})
    assert reply.done and reply.message.content
    assert reply.eval_count and reply.eval_count <= 4
    assert reply.done_reason == "length"
    parts = list(client.chat(model=model, messages=MSG, stream=True, options={"num_predict": 4}))
    assert parts[-1].done and all(not p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts)
    assert parts[-1].model == model


@pytest.mark.parametrize("model", NAMES)
def test_openai_client_chat(gateway: Server, model: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(model=model, messages=MSG, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens <= 4
    assert reply.usage.prompt_tokens > 0
    stream = client.chat.completions.create(
        model=model,
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text
    assert events[-1].usage is not None and events[-1].usage.completion_tokens <= 4


def test_deepseek_root_and_generate(gateway: Server) -> None:
    """DeepSeek clients call the bare root; Ollama's generate goes to /api/generate."""
    client = openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="oa-smol", messages=MSG, max_tokens=3)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    out = ollama.Client(host=gateway.url).generate(
        model="ol-smol", prompt="Hello", options={"num_predict": 3}
    )
    assert out.response and out.done
    assert out.context  # the upstream's generate returns context, relayed


def test_completions_through_openai_upstream(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        r = http.post(
            "/v1/completions", json={"model": "oa-smol", "prompt": "1, 2, 3,", "max_tokens": 3}
        )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"]


def test_listings_include_upstream_models(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        tags = {m["name"]: m for m in http.get("/api/tags").json()["models"]}
        assert tags["smollm2:135m"]["details"]["upstream"] == "real-ollama"
        assert tags["smollm2:135m"]["details"]["family"] == "llama"  # discovered details
        assert tags["oa-smol"]["remote_model"] == "smollm2:135m"
        assert tags["oa-smol"]["details"]["upstream"] == "real-openai"
        assert len(tags["oa-smol"]["digest"]) == 64
        ids = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
        assert ids["ol-smol"]["owned_by"] == "real-ollama2"
        assert {m["id"] for m in http.get("/models").json()["data"]} == set(ids)
        assert http.get("/v1/models/oa-smol").json()["id"] == "oa-smol"
        shown = http.post("/api/show", json={"model": "ol-smol"}).json()
        assert "general.architecture" in shown["model_info"]  # proxied to the upstream
        assert shown["details"]["upstream"] == "real-ollama2"
        admin = http.get("/admin/upstreams").json()["upstreams"]
        assert {u["name"] for u in admin} >= {"real-ollama", "real-openai", "dead"}
        assert all(u["breaker"]["state"] in ("closed", "open", "half_open") for u in admin)
        assert "sk-test-not-logged" not in str(admin)


def test_embeddings_through_upstreams(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        native = http.post("/api/embed", json={"model": "ol-smol", "input": ["a", "b"]})
        assert native.status_code == 200, native.text
        assert len(native.json()["embeddings"]) == 2
        oa = http.post("/v1/embeddings", json={"model": "oa-smol", "input": "a"})
        assert oa.status_code == 200, oa.text
        assert len(oa.json()["data"][0]["embedding"]) > 10


def test_unknown_model_is_404(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post("/api/chat", json={"model": "nope", "messages": MSG})
        assert r.status_code == 404
        r = http.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
