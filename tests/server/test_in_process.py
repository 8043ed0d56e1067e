"""The app assembled in-process around a fake backend: the three APIs' chat routes with
the official clients, streaming and not, and the policy chain seeing every operation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ollama
import pytest
from openai import OpenAI

from llmux.core.context import RequestContext
from llmux.gateway import Gateway
from llmux.policies import Operation
from tests.support.inprocess import BASE, App, RecordingPolicy, in_process

MESSAGES = [{"role": "user", "content": "Hi there"}]


@pytest.fixture
def app(tmp_path: Path) -> Any:
    with in_process(tmp_path, policies=[RecordingPolicy()]) as a:
        yield a


def policy(app: App) -> RecordingPolicy:
    found = app.gateway.policies[0]
    assert isinstance(found, RecordingPolicy)
    return found


def openai_client(app: App, base: str = BASE + "/v1") -> OpenAI:
    return OpenAI(base_url=base, api_key="unused", http_client=app.client, max_retries=0)


def test_ollama_chat_and_generate_streaming_and_not(app: App) -> None:
    client = ollama.Client(host=BASE)
    client._client = app.client  # the official client's calls, sent in-process
    whole = client.chat(model="fake", messages=MESSAGES, stream=False)
    assert whole.message.content == "Hello world" and whole.done and whole.eval_count == 2
    parts = list(client.chat(model="fake", messages=MESSAGES, stream=True))
    assert "".join(p.message.content for p in parts) == "Hello world" and parts[-1].done
    app.backend.reply("a", "b", "c")
    generated = client.generate(model="fake", prompt="Say it", stream=False)
    assert generated.response == "abc" and generated.done_reason == "stop"
    lines = [
        json.loads(x)
        for x in app.client.post(
            "/api/generate", json={"model": "fake", "prompt": "x"}
        ).text.splitlines()
    ]
    assert [x.get("response") for x in lines[:2]] == ["Hello", " world"] and lines[-1]["done"]


def test_openai_and_deepseek_chat_streaming_and_not(app: App) -> None:
    for base in (BASE + "/v1", BASE):  # OpenAI at /v1, DeepSeek at the bare root
        client = openai_client(app, base)
        reply = client.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "Hello world"
        assert reply.usage is not None and reply.usage.completion_tokens == 2
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="fake", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            if c.choices
        )
        assert text == "Hello world"
    ds = openai_client(app, BASE + "/beta")
    fim = ds.completions.create(model="fake", prompt="def f(", suffix="return 1", max_tokens=5)
    assert fim.choices[0].text == "Hello world"


def test_the_policy_sees_every_operation_with_its_request_id(app: App) -> None:
    c = app.client
    chat = {"model": "fake", "messages": MESSAGES}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/api/chat", {**chat, "stream": False}),
        ("/api/chat", {**chat, "stream": True}),
        ("/api/generate", {"model": "fake", "prompt": "x", "stream": False}),
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", {**chat, "stream": True}),
        ("/v1/completions", {"model": "fake", "prompt": ["one", "two"]}),
        ("/chat/completions", chat),
        ("/beta/completions", {"model": "fake", "prompt": "x", "suffix": "y"}),
        ("/api/embed", {"model": "fake", "input": ["a", "b c"]}),
        ("/api/embeddings", {"model": "fake", "prompt": "a"}),
        ("/v1/embeddings", {"model": "fake", "input": "a"}),
    ]
    ids = []
    for i, (path, body) in enumerate(calls):
        r = c.post(path, json=body, headers={"X-Request-Id": f"req-{i}"})
        assert r.status_code == 200, (path, r.text)
        ids.append(r.headers["x-request-id"])
    conv = c.post("/api/conversations", json={"model": "fake"}).json()
    r = c.post(f"/api/conversations/{conv['id']}/messages", json={"content": "hi", "stream": False})
    assert r.status_code == 200, r.text
    seen = policy(app).seen
    assert [s.ctx.request_id for s in seen[: len(calls)]] == [f"req-{i}" for i in range(len(calls))]
    assert ids == [f"req-{i}" for i in range(len(calls))]
    kinds = [(s.op.kind, s.ctx.route) for s in seen]
    assert kinds[:8] == [("chat", p) for p, _ in calls[:8]]
    assert kinds[8:11] == [("embed", p) for p, _ in calls[8:11]]
    assert kinds[11] == ("chat", f"/api/conversations/{conv['id']}/messages")
    assert all(s.ctx.principal.anonymous for s in seen)
    assert [s.ctx.api for s in seen[:8]] == ["ollama"] * 3 + ["openai"] * 3 + ["deepseek"] * 2
    completions = seen[5].op
    assert len(completions.requests) == 2, "several prompts are one operation"
    for s in seen:
        assert s.outcome is not None and s.outcome.ok, s
    assert seen[0].outcome is not None and seen[0].outcome.usage.completion_tokens == 2
    assert seen[5].outcome is not None and seen[5].outcome.usage.completion_tokens == 4
    assert seen[8].outcome is not None and seen[8].outcome.usage.prompt_tokens == 3
    assert all(s.outcome.ttft_s is not None for s in seen if s.outcome)


def test_an_error_from_the_backend_reaches_the_outcome(app: App) -> None:
    from llmux.errors import ServerBusy

    app.backend.reply(error=ServerBusy("queue full", retry_after=3))
    r = app.client.post("/v1/chat/completions", json={"model": "fake", "messages": MESSAGES})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    last = policy(app).seen[-1]
    assert last.outcome is not None and isinstance(last.outcome.error, ServerBusy)


class RecordingGateway(Gateway):
    """Records which door each management route knocks on."""

    doors: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.doors = []

    def _knock(self, name: str, ctx: RequestContext) -> None:
        assert isinstance(ctx, RequestContext) and ctx.request_id
        self.doors.append(name)

    def models(self, ctx: RequestContext, **kw: Any) -> Any:
        self._knock("models", ctx)
        return super().models(ctx, **kw)

    async def show(self, ctx: RequestContext, model: str, verbose: bool = False) -> Any:
        self._knock("show", ctx)
        return await super().show(ctx, model, verbose)

    def ps(self, ctx: RequestContext) -> Any:
        self._knock("ps", ctx)
        return super().ps(ctx)

    async def load(self, ctx: RequestContext, *args: Any) -> Any:
        self._knock("load", ctx)
        return await super().load(ctx, *args)

    async def unload(self, ctx: RequestContext, model: str) -> None:
        self._knock("unload", ctx)
        await super().unload(ctx, model)

    def pull(self, ctx: RequestContext, *args: Any) -> Any:
        self._knock("pull", ctx)
        return super().pull(ctx, *args)

    def push(self, ctx: RequestContext, *args: Any) -> Any:
        self._knock("push", ctx)
        return super().push(ctx, *args)

    def create(self, ctx: RequestContext, *args: Any) -> Any:
        self._knock("create", ctx)
        return super().create(ctx, *args)

    def copy(self, ctx: RequestContext, *args: Any) -> None:
        self._knock("copy", ctx)
        super().copy(ctx, *args)

    async def delete(self, ctx: RequestContext, model: str) -> None:
        self._knock("delete", ctx)
        await super().delete(ctx, model)

    def has_blob(self, ctx: RequestContext, digest: str) -> bool:
        self._knock("has_blob", ctx)
        return super().has_blob(ctx, digest)


def test_model_management_goes_through_the_gateway(tmp_path: Path) -> None:
    with in_process(tmp_path, gateway_cls=RecordingGateway) as app:
        gw = app.gateway
        assert isinstance(gw, RecordingGateway)
        c = app.client
        assert c.get("/api/tags").json()["models"][0]["name"] == "fake:latest"
        assert c.get("/v1/models").json()["data"][0]["id"] == "fake:latest"
        assert c.post("/api/show", json={"model": "fake"}).json()["template"] == "{{ .Prompt }}"
        assert c.post("/api/generate", json={"model": "fake"}).json()["done_reason"] == "load"
        assert c.get("/api/ps").json()["models"][0]["name"] == "fake:latest"
        unloaded = c.post("/api/chat", json={"model": "fake", "messages": [], "keep_alive": 0})
        assert (
            unloaded.json()["done_reason"] == "unload" and c.get("/api/ps").json()["models"] == []
        )
        # the store is real but empty: these answer with the store's own errors
        assert (
            c.post("/api/pull", json={"model": "x", "insecure": True, "stream": False}).status_code
            >= 400
        )
        assert c.post("/api/push", json={"model": "nope", "insecure": True}).status_code == 404
        assert c.post("/api/create", json={"model": "m", "from": "nope:1"}).status_code == 404
        assert c.post("/api/copy", json={"source": "nope", "destination": "n2"}).status_code == 404
        assert c.request("DELETE", "/api/delete", json={"model": "nope"}).status_code == 404
        assert c.head("/api/blobs/sha256:" + "0" * 64).status_code == 404
        assert gw.doors == [
            "models", "models", "show", "load", "ps", "unload", "ps",
            "pull", "push", "create", "copy", "delete", "has_blob",
        ]  # fmt: skip
        assert [c.method for c in app.backend.calls if c.method != "models"] == [
            "show",
            "load",
            "unload",
        ]


def test_operation_without_body_is_metadata_only() -> None:
    op = Operation("chat", "m", backend="relay")
    assert not op.has_body


def test_context_window_sets_num_ctx_and_text_completion_is_completions(app: App) -> None:
    c = app.client
    r = c.post(
        "/v1/chat/completions", json={"model": "fake", "messages": MESSAGES, "context_window": 8192}
    )
    assert r.status_code == 200
    r = c.post(
        "/chat/completions",
        json={
            "model": "fake",
            "messages": MESSAGES,
            "context_window": 8192,
            "options": {"num_ctx": 1024},
        },
    )
    assert r.status_code == 200
    r = c.post("/v1/completions", json={"model": "fake", "prompt": "x", "context_window": 2048})
    assert r.status_code == 200
    loads = [call.args[0].load.num_ctx for call in app.backend.calls_of("chat")]
    assert loads == [8192, 1024, 2048], "options.num_ctx wins over context_window"
    bad = c.post(
        "/v1/chat/completions", json={"model": "fake", "messages": MESSAGES, "context_window": 0}
    )
    assert bad.status_code == 400 and "context_window" in bad.json()["error"]["message"]
    for path in ("/v1/text/completion", "/text/completion"):
        r = c.post(
            path, json={"model": "fake", "prompt": "Once", "max_tokens": 5, "temperature": 0.5}
        )
        assert r.status_code == 200 and r.json()["object"] == "text_completion"
        assert r.json()["choices"][0]["text"] == "Hello world"
        streamed = c.post(path, json={"model": "fake", "prompt": "Once", "stream": True}).text
        assert streamed.rstrip().endswith("data: [DONE]")


def test_the_bundled_model_comes_back_offline_from_its_package(app: App) -> None:
    manager = app.gateway.manager
    assert manager is not None and not manager.installed("smollm2:135m")
    r = app.client.post("/api/pull", json={"model": "smollm2:135m"})
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert r.status_code == 200 and lines[0] == {"status": "pulling manifest"}
    assert lines[1]["digest"].startswith("sha256:") and lines[1]["completed"] == lines[1]["total"]
    assert lines[-1] == {"status": "success"} and manager.installed("smollm2:135m")
    again = app.client.post("/api/pull", json={"model": "SmolLM2:135m", "stream": False})
    assert again.json() == {"status": "success"}
