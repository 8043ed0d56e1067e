"""The error boundary and the identity layer, in-process: every failure in the API's
own shape, request ids on every response and log record, client addresses."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.errors import InsufficientScope, PaymentRequired, RateLimited, Unauthorized
from llmux.server.identity import client_address, networks
from llmux.server.relay import Relay
from llmux.upstream.settings import UpstreamSettings
from tests.support.inprocess import App, RecordingPolicy, in_process

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
DEAD_UPSTREAM = UpstreamSettings(
    name="dead", type="openai", url="http://127.0.0.1:9/v1", models=["far-away"]
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path, policies=[RecordingPolicy()]) as a:
        yield a


def chunked(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        yield b" " * 4096
        sent += 4096


@pytest.mark.parametrize("upstreams", [[], [DEAD_UPSTREAM]], ids=["local", "with-upstream"])
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_chunked_body_over_the_limit_is_413(
    tmp_path: Path, upstreams: list[UpstreamSettings], path: str
) -> None:
    with in_process(tmp_path, upstreams=upstreams, server={"max_body_bytes": 8192}) as app:
        r = app.client.post(path, content=chunked(64 * 1024))
        assert r.status_code == 413, r.text
        body = r.json()
        message = body["error"] if path.startswith("/api") else body["error"]["message"]
        assert "exceeds the limit of 8192 bytes" in message
        assert r.headers["x-request-id"]


def test_a_declared_length_over_the_limit_is_413_in_openai_shape(tmp_path: Path) -> None:
    with in_process(tmp_path, server={"max_body_bytes": 2048}) as app:
        r = app.client.post("/v1/chat/completions", content=b"{" + b" " * 4096 + b"}")
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_an_unexpected_exception_before_the_reply_is_a_500_in_each_shape(app: App) -> None:
    app.backend.reply(error=RuntimeError("secret internals"))
    r = app.client.post("/api/chat", json=CHAT)
    assert r.status_code == 500 and r.json() == {
        "error": "internal server error; see the server log"
    }
    app.backend.reply(error=RuntimeError("secret internals"))
    r = app.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["type"] == "api_error"
    assert "secret" not in r.text and r.headers["x-request-id"]
    assert r.headers.get("connection") != "close"
    again = app.client.post("/v1/chat/completions", json=CHAT)
    assert again.status_code == 200, "the connection and the server are fine afterwards"


def test_an_unexpected_exception_mid_stream_is_the_last_line_or_event(app: App) -> None:
    app.backend.reply("one", "two", error=RuntimeError("secret"), error_after=1)
    r = app.client.post("/api/chat", json={**CHAT, "stream": True})
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert r.status_code == 200 and lines[0]["message"]["content"] == "one"
    assert lines[-1] == {"error": "internal server error; see the server log"}
    app.backend.reply("one", "two", error=RuntimeError("secret"), error_after=1)
    r = app.client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert json.loads(events[-1])["error"]["message"].startswith("internal server error")
    assert "[DONE]" not in r.text and "secret" not in r.text


def test_an_exception_in_a_middleware_is_a_500_in_the_api_shape(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Relay, scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("middleware bug")

    monkeypatch.setattr(Relay, "__call__", broken)
    r = app.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    r = app.client.get("/api/tags")
    assert r.status_code == 500 and r.json() == {
        "error": "internal server error; see the server log"
    }


@pytest.mark.parametrize(
    ("error", "status", "header"),
    [
        (Unauthorized("no API key; send Authorization: Bearer <key>"), 401, "www-authenticate"),
        (PaymentRequired("Insufficient Balance"), 402, None),
        (InsufficientScope("models:write"), 403, None),
        (
            RateLimited("slow down", retry_after=7, headers={"X-RateLimit-Limit": "60"}),
            429,
            "retry-after",
        ),
    ],
)
def test_errors_carry_their_status_and_headers(
    app: App, error: Exception, status: int, header: str | None
) -> None:
    app.backend.reply(error=error)
    r = app.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == status and r.json()["error"]["message"] == str(error)
    if header:
        assert r.headers[header]
    if status == 429:
        assert r.headers["retry-after"] == "7" and r.headers["x-ratelimit-limit"] == "60"
        assert r.json()["error"]["type"] == "rate_limit_error"
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer realm=")


def test_framework_errors_come_through_the_boundary(app: App) -> None:
    assert app.client.get("/api/nope").json() == {
        "error": "GET /api/nope not found; see docs/api.md for the routes"
    }
    r = app.client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = app.client.get("/api/conversations?limit=0")
    assert r.status_code == 400 and "limit" in r.json()["error"]


def test_request_ids_are_echoed_or_minted_and_reach_the_log(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    mine = app.client.get("/api/tags", headers={"X-Request-Id": "my-id.42"})
    assert mine.headers["x-request-id"] == "my-id.42"
    minted = app.client.get("/api/tags", headers={"X-Request-Id": "bad id with spaces"})
    assert minted.headers["x-request-id"] != "bad id with spaces"
    assert len(minted.headers["x-request-id"]) == 32
    assert app.client.get("/nope").headers["x-request-id"], "errors carry it too"
    with caplog.at_level(logging.INFO, logger="tests.fake_backend"):
        app.client.post(
            "/api/chat", json={**CHAT, "stream": False}, headers={"X-Request-Id": "trace-7"}
        )
    served = [r for r in caplog.records if r.name == "tests.fake_backend"]
    assert served and all(getattr(r, "request_id", None) == "trace-7" for r in served)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = networks(["10.0.0.0/8", "::1"])
    fwd = "203.0.113.9, 198.51.100.7, 10.0.0.5"
    assert client_address("192.0.2.1", fwd, proxies) == "192.0.2.1", "untrusted peer"
    assert client_address("10.1.2.3", fwd, ()) == "10.1.2.3", "no proxies configured"
    assert client_address("10.1.2.3", fwd, proxies) == "198.51.100.7", "rightmost untrusted"
    assert client_address("::1", "10.0.0.7, 10.0.0.8", proxies) == "10.0.0.7", "all trusted"
    assert client_address("10.1.2.3", None, proxies) == "10.1.2.3"
    with pytest.raises(ValueError, match="not-an-ip"):
        networks(["not-an-ip"])


def test_the_peer_is_the_client_without_trusted_proxies(app: App) -> None:
    app.client.post(
        "/api/chat", json={**CHAT, "stream": False}, headers={"X-Forwarded-For": "203.0.113.9"}
    )
    seen = app.gateway.policies[0].seen  # type: ignore[attr-defined]
    assert seen[-1].ctx.client == "testclient"


def test_the_interactive_docs_are_off_unless_enabled(tmp_path: Path, app: App) -> None:
    assert app.client.get("/docs").status_code == 404
    assert app.client.get("/openapi.json").json()["info"]["title"] == "llmux"
    with in_process(tmp_path / "docs", server={"api_docs": True}) as on:
        assert "swagger" in on.client.get("/docs").text.lower()


def test_a_405_lists_every_method_of_the_path(app: App) -> None:
    r = app.client.request("PUT", "/api/conversations")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = app.client.get("/api/chat")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json() == {"error": "method GET not allowed for /api/chat; use POST"}


def test_the_openapi_document_describes_bodies_and_400s(app: App) -> None:
    doc = app.client.get("/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] in doc["components"]["schemas"]
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), "one operation id per method and path"
    for path in doc["paths"].values():
        for op in path.values():
            assert "422" not in op["responses"] and "400" in op["responses"]
