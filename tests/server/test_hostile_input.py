"""Hostile input is a 400, never a 500 (issue 21, items 8-10): JSON nested too deep,
numbers out of range, NaN and infinities, offsets past 64 bits, U+0000 in what is stored,
and a reply that could not be stored says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.core.conversations import NewMessage
from llmux.server.body import MAX_DEPTH
from tests.support.inprocess import App, in_process

MESSAGES = [{"role": "user", "content": "hi"}]
ROUTES: dict[str, dict[str, Any]] = {
    "/api/chat": {"model": "fake", "messages": MESSAGES, "stream": False},
    "/api/generate": {"model": "fake", "prompt": "hi", "stream": False},
    "/v1/chat/completions": {"model": "fake", "messages": MESSAGES},
    "/v1/completions": {"model": "fake", "prompt": "hi"},
    "/chat/completions": {"model": "fake", "messages": MESSAGES},
    "/api/embed": {"model": "fake", "input": "hi"},
    "/v1/embeddings": {"model": "fake", "input": "hi"},
    "/api/show": {"model": "fake"},
    "/api/create": {"model": "x", "from": "fake"},
    "/api/conversations": {"title": "t"},
}
HUGE_INT = "9" * 5000  # past Python's 4,300-digit limit for int()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path) as a:
        yield a


def message_of(r: Any) -> str:
    error = r.json()["error"]
    return str(error if isinstance(error, str) else error["message"])


def post_raw(app: App, path: str, raw: str) -> Any:
    return app.client.post(path, content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path", list(ROUTES))
def test_json_nested_100000_deep_is_400_on_every_route(app: App, path: str) -> None:
    raw = json.dumps(ROUTES[path])[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = post_raw(app, path, raw)
    assert r.status_code == 400, r.text
    assert "nested deeper" in message_of(r)


def test_nesting_up_to_the_limit_is_accepted(app: App) -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH - 3):
        deep = [deep]
    body = {**ROUTES["/api/chat"], "extra": deep}
    assert app.client.post("/api/chat", json=body).status_code == 200
    too_deep = {**ROUTES["/api/chat"], "extra": [[[deep]]]}
    assert app.client.post("/api/chat", json=too_deep).status_code == 400


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/api/chat", "options.num_predict", HUGE_INT),
        ("/api/chat", "options.num_predict", "1e400"),
        ("/api/chat", "options.num_predict", "Infinity"),
        ("/api/chat", "options.num_predict", "NaN"),
        ("/api/chat", "options.seed", "-Infinity"),
        ("/api/chat", "options.temperature", "1e400"),
        ("/api/chat", "options.top_k", "1" + "0" * 40),
        ("/api/chat", "keep_alive", "NaN"),
        ("/api/chat", "keep_alive", HUGE_INT),
        ("/api/generate", "options.num_ctx", "1e400"),
        ("/v1/chat/completions", "max_tokens", HUGE_INT),
        ("/v1/chat/completions", "max_tokens", "1e400"),
        ("/v1/chat/completions", "n", "1" + "0" * 40),
        ("/v1/chat/completions", "seed", HUGE_INT),
        ("/v1/chat/completions", "seed", "1" + "0" * 40),
        ("/v1/chat/completions", "temperature", "NaN"),
        ("/v1/chat/completions", "top_logprobs", "1e400"),
        ("/v1/chat/completions", "logit_bias", '{"1": 1e400}'),
        ("/v1/chat/completions", "logit_bias", '{"' + HUGE_INT + '": 1}'),
        ("/v1/chat/completions", "logit_bias", '{"' + "1" + "0" * 40 + '": 1}'),
        ("/v1/completions", "max_tokens", "-Infinity"),
        ("/v1/completions", "logprobs", HUGE_INT),
        ("/api/embed", "options.num_ctx", "NaN"),
    ],
)
def test_numbers_out_of_range_are_400(app: App, path: str, field: str, value: str) -> None:
    body = dict(ROUTES[path])
    raw_value = "__RAW__"
    if "." in field:
        outer, inner = field.split(".")
        body[outer] = {inner: raw_value}
    else:
        body[field] = raw_value
    raw = json.dumps(body).replace('"__RAW__"', value)
    r = post_raw(app, path, raw)
    assert r.status_code == 400, (r.status_code, r.text[:300])


def test_large_in_range_integer_options_are_accepted_and_clamped(app: App) -> None:
    options = {"num_predict": 2**62, "seed": 2**62, "top_k": -(2**62)}
    r = app.client.post("/api/chat", json={**ROUTES["/api/chat"], "options": options})
    assert r.status_code == 200, r.text
    (call,) = app.backend.calls_of("chat")
    sampling = call.args[0].sampling
    assert (sampling.num_predict, sampling.seed, sampling.top_k) == (2**31 - 1, 2**62, -(2**31))


@pytest.mark.parametrize(
    "query",
    [
        "offset=9223372036854775808",
        "offset=-1",
        f"offset={HUGE_INT}",
        "limit=9223372036854775808",
        "offset=1e400",
        "q=x&offset=9223372036854775808",
    ],
)
def test_conversation_list_bounds_its_query(app: App, query: str) -> None:
    r = app.client.get(f"/api/conversations?{query}")
    assert r.status_code == 400, r.text


def test_conversation_ids_with_nul_are_404(app: App) -> None:
    for method in ("GET", "DELETE"):
        assert app.client.request(method, "/api/conversations/ab%00cd").status_code == 404
    r = app.client.post("/api/conversations/ab%00cd/messages", json={"content": "x"})
    assert r.status_code == 404


def test_nul_in_titles_messages_and_replies_is_stored_as_u_fffd(app: App) -> None:
    conv = app.client.post("/api/conversations", json={"title": "a\x00b", "model": "fake"})
    assert conv.status_code == 201 and conv.json()["title"] == "a\ufffdb"
    cid = conv.json()["id"]
    app.backend.reply("re", "\x00ply")
    r = app.client.post(
        f"/api/conversations/{cid}/messages", json={"content": "q\x00", "stream": False}
    )
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == "re\x00ply"  # the client gets what was said
    assert r.json()["stored"] is True and isinstance(r.json()["message_id"], int)
    stored = app.client.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["content"] for m in stored] == ["q\ufffd", "re\ufffdply"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_that_cannot_be_stored_says_so_in_its_final_line(
    app: App, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    cid = app.client.post("/api/conversations", json={"model": "fake"}).json()["id"]
    repo = app.client.app.state.services.history.repo  # type: ignore[attr-defined]
    original = repo.append

    async def failing(conversation_id: str, message: NewMessage, **kw: Any) -> Any:
        if message.role == "assistant":
            raise OSError("disk full")
        return await original(conversation_id, message, **kw)

    monkeypatch.setattr(repo, "append", failing)
    r = app.client.post(
        f"/api/conversations/{cid}/messages", json={"content": "hi", "stream": stream}
    )
    assert r.status_code == 200
    final = json.loads(r.text.strip().splitlines()[-1])
    assert final["done"] is True and final["message_id"] is None
    assert final["stored"] is False and "not stored" in final["store_error"]
