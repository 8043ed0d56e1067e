"""Chat over a WebSocket (issue 21 item 25), with a real WebSocket client (the
`websockets` package) against a real server and the bundled model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import MODEL, Server

ASK = [{"role": "user", "content": "Count to three."}]


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def turn_messages(ws: ClientConnection, turn: str) -> list[dict[str, Any]]:
    """Every message of one turn, up to the one that ends it."""
    out = []
    while True:
        message = json.loads(ws.recv(timeout=120))
        assert message["turn"] == turn
        out.append(message)
        if message.get("done") or message.get("cancelled") or "error" in message:
            return out


def test_several_turns_on_one_connection_in_ollama_shape(server: Server) -> None:
    with connect(ws_url(server, "/api/chat/ws")) as ws:
        for turn in ("first", "second"):
            request = {"model": MODEL, "messages": ASK, "options": {"num_predict": 6}}
            ws.send(json.dumps({"turn": turn, "request": request}))
            messages = turn_messages(ws, turn)
            chunks = [m["chunk"] for m in messages[:-1]]
            assert messages[-1] == {"turn": turn, "done": True}
            assert chunks[0]["model"] == MODEL and "content" in chunks[0]["message"]
            assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] > 0
        ws.send(
            json.dumps(
                {"request": {"model": MODEL, "messages": ASK, "options": {"num_predict": 2}}}
            )
        )
        numbered = json.loads(ws.recv(timeout=120))
        assert numbered["turn"] == "3", "turns without a name are numbered"


def test_openai_shape_cancel_then_go_on(server: Server, no_eos: dict[str, int]) -> None:
    with connect(ws_url(server, "/v1/chat/completions/ws")) as ws:
        long = {"model": MODEL, "messages": ASK, "max_tokens": 2000, "logit_bias": no_eos}
        ws.send(json.dumps({"turn": "long", "request": long}))
        first = json.loads(ws.recv(timeout=120))
        assert first["turn"] == "long" and first["chunk"]["object"] == "chat.completion.chunk"
        ws.send(json.dumps({"cancel": "long"}))
        rest = turn_messages(ws, "long")
        assert rest[-1] == {"turn": "long", "cancelled": True}
        assert len(rest) < 1500, "the turn stopped when it was cancelled"
        short = {
            "model": MODEL,
            "messages": ASK,
            "max_tokens": 3,
            "stream_options": {"include_usage": True},
        }
        ws.send(json.dumps({"turn": "next", "request": short}))
        messages = turn_messages(ws, "next")
        assert messages[-1] == {"turn": "next", "done": True}
        assert messages[-2]["chunk"]["usage"]["completion_tokens"] > 0


def test_errors_end_the_turn_in_the_api_shape(server: Server) -> None:
    with connect(ws_url(server, "/v1/chat/completions/ws")) as ws:
        ws.send(json.dumps({"turn": "x", "request": {"model": "nope:1b", "messages": ASK}}))
        error = json.loads(ws.recv(timeout=60))
        assert error["turn"] == "x" and error["status"] == 404
        assert error["error"]["code"] == "model_not_found"
        ws.send(json.dumps({"turn": "y", "request": {"model": MODEL, "messages": "hi"}}))
        assert json.loads(ws.recv(timeout=60))["status"] == 400
        ws.send(json.dumps([1, 2]))
        assert json.loads(ws.recv(timeout=60))["status"] == 400
    with connect(ws_url(server, "/api/chat/ws")) as ws:
        ws.send(json.dumps({"turn": "z", "request": {"model": "nope:1b", "messages": ASK}}))
        error = json.loads(ws.recv(timeout=60))
        assert error["status"] == 404 and isinstance(error["error"], str)


def test_a_page_on_another_origin_cannot_open_one(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "/api/chat/ws"), origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    with connect(ws_url(server, "/api/chat/ws"), origin="http://localhost:3000") as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"cancel": "nothing"}))  # allowed origins work
