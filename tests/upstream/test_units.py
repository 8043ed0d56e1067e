"""Pure parts: request translation both ways, stream readers, breaker, backoff, load
balancing and settings validation. No servers."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from pydantic import ValidationError

from llmux.config import Settings
from llmux.core.request import ChatRequest, LoadOptions, Message, Sampling, Tool, ToolCall
from llmux.upstream import ollama, openai
from llmux.upstream.breaker import CircuitBreaker
from llmux.upstream.http import parse_retry_after, status_failure
from llmux.upstream.pool import order
from llmux.upstream.retry import backoff
from llmux.upstream.settings import BreakerSettings, RetryRule, UpstreamSettings
from llmux.upstream.translate import ThinkText

PNG = b"\x89PNG\r\n\x1a\n0000"


def request(**kw: Any) -> ChatRequest:
    base: dict[str, Any] = dict(
        model="m",
        messages=(
            Message("system", "sys"),
            Message("user", "look", images=(PNG,)),
            Message(
                "assistant", "", thinking="hmm", tool_calls=(ToolCall("f", {"a": 1}, id="call_9"),)
            ),
            Message("tool", "42", tool_name="f"),
        ),
        sampling=Sampling(num_predict=5, temperature=0.1, top_k=7, seed=2, stop=("x",)),
        load=LoadOptions(num_ctx=2048),
        tools=(Tool("f", "d", {"type": "object"}),),
    )
    base.update(kw)
    return ChatRequest(**base)


def test_core_to_ollama_body() -> None:
    path, body = ollama.chat_request(request(format="json", think=True), "up:1", "u")
    assert path == "/api/chat" and body["model"] == "up:1" and body["stream"] is True
    assert body["options"] == {
        "num_predict": 5,
        "temperature": 0.1,
        "top_k": 7,
        "seed": 2,
        "stop": ["x"],
        "num_ctx": 2048,
    }
    msgs = body["messages"]
    assert msgs[1]["images"] == ["iVBORw0KGgowMDAw"]  # base64, no data-URI prefix
    assert msgs[2]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert msgs[2]["thinking"] == "hmm" and msgs[3]["tool_name"] == "f"
    assert body["format"] == "json" and body["think"] is True
    path, body = ollama.chat_request(ChatRequest(model="m", prompt="p", suffix="s"), "m", "u")
    assert path == "/api/generate" and body["suffix"] == "s" and body["raw"] is False


def test_core_to_openai_body() -> None:
    schema = {"type": "object"}
    path, body = openai.chat_request(request(format=schema, tool_choice="f"), "up", "u")
    assert path == "/chat/completions" and body["max_tokens"] == 5 and body["seed"] == 2
    assert "top_k" not in body and "options" not in body
    msgs = body["messages"]
    assert msgs[1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    call = msgs[2]["tool_calls"][0]
    assert call["id"] == "call_9" and json.loads(call["function"]["arguments"]) == {"a": 1}
    assert msgs[2]["reasoning_content"] == "hmm"
    assert msgs[3]["tool_call_id"] == "call_9"  # found by tool name
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    _, body = openai.chat_request(request(), "up", "u", send_options=True)
    assert body["options"] == {"top_k": 7, "num_ctx": 2048}


def test_openai_reader_joins_fragments_and_reasoning() -> None:
    r = openai.Reader("u")
    out = r.event({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]})
    assert out[0].thinking == "think"
    for piece in ('{"a"', ": 1}"):
        r.event(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "c1",
                                    "function": {"name": "f", "arguments": piece},
                                }
                            ]
                        },
                    }
                ]
            }
        )
    r.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    r.event(
        {
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "prompt_cache_hit_tokens": 1},
        }
    )
    calls, done = r.finish()
    assert calls.tool_calls[0].arguments == {"a": 1} and calls.tool_calls[0].id == "c1"
    assert done.done and done.metrics is not None
    assert (done.metrics.prompt_tokens, done.metrics.cached_tokens) == (3, 1)


def test_ollama_reader_splits_think_and_final_output() -> None:
    r = ollama.Reader("u")
    a = r.chunks({"message": {"content": "<think>plan"}, "done": False})[0]
    b = r.chunks({"message": {"content": "</think>answer"}, "done": False})[0]
    assert (a.thinking, a.content, b.thinking, b.content) == ("plan", "", "", "answer")
    body, end = r.chunks(
        {"response": "tail", "done": True, "done_reason": "length", "eval_count": 2}
    )
    assert body.content == "tail" and end.done and end.done_reason == "length"
    assert end.metrics is not None and end.metrics.completion_tokens == 2


def test_think_text_passes_plain_answers_through() -> None:
    t = ThinkText()
    assert t.feed("<thi") == ("", "")
    assert t.feed("nk>x</think>y") == ("x", "y")
    plain = ThinkText()
    assert plain.feed("hello <think>") == ("", "hello <think>")


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    b = CircuitBreaker(
        BreakerSettings(window=4, min_calls=2, open_s=30, half_open_calls=5), clock=lambda: now[0]
    )
    b.record(False)
    b.record(True)  # 1 of 2 failed: 50 % opens
    assert b.state == "open" and not b.allow()
    now[0] = 30.0
    assert b.state == "half_open"
    assert all(b.allow() for _ in range(5)) and not b.allow()  # 5 trial calls
    for failed in (False, False, False, True, False):
        b.record(failed)
    assert b.state == "closed"
    b2 = CircuitBreaker(
        BreakerSettings(min_calls=1, open_s=1, half_open_calls=2), clock=lambda: now[0]
    )
    b2.record(True)
    now[0] = 31.5
    b2.allow(), b2.allow()
    b2.record(True)
    b2.record(False)  # 50 % of the trials failed: opens again
    assert b2.state == "open" and b2.snapshot()["times_opened"] == 2


def test_backoff_rules_and_retry_after() -> None:
    rule = RetryRule(retries=3, base_s=1, max_s=5, multiplier=2, jitter=0)
    assert [backoff(rule, n) for n in range(4)] == [1, 2, 4, 5]
    assert backoff(rule, 0, retry_after=7) == 7
    jittered = RetryRule(base_s=1, max_s=1, jitter=1.0)
    assert all(0 <= backoff(jittered, 0) <= 2 for _ in range(50))
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None


def test_status_failures_map_to_client_errors() -> None:
    assert status_failure("u", "m", 401, b"{}", {}).final is not None
    assert status_failure("u", "m", 401, b"{}", {}).final.status == 502  # type: ignore[union-attr]
    assert status_failure("u", "m", 404, b'{"error":"no"}', {}).final.status == 404  # type: ignore[union-attr]
    f = status_failure("u", "m", 429, b"", {"retry-after": "2"})
    assert f.final is None and f.retry_after == 2 and f.rule == "429"
    assert status_failure("u", "m", 503, b"", {}).counts_against_breaker


class FakeMember:
    def __init__(self, name: str, weight: float, outstanding: int, healthy: bool = True) -> None:
        self.name, self.weight, self.outstanding, self.healthy = name, weight, outstanding, healthy
        self.breaker = None


def test_least_outstanding_weighted_order() -> None:
    a, b, c = FakeMember("a", 1, 1), FakeMember("b", 4, 2), FakeMember("c", 1, 0, healthy=False)
    names = [m.name for m, _ in order([(a, "x"), (b, "x"), (c, "x")])]  # type: ignore[list-item]
    assert names == ["b", "a", "c"]  # (2+1)/4 < (1+1)/1; unhealthy last


def test_settings_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    up = {"name": "a", "type": "ollama", "url": "http://h:1/"}
    with pytest.raises(ValidationError, match="unique"):
        Settings(upstreams=[up, up])
    with pytest.raises(ValidationError, match="NOPE_KEY is not set"):
        UpstreamSettings(**up, api_key_env="NOPE_KEY")
    monkeypatch.setenv("MY_KEY", "sk-1")
    s = UpstreamSettings(**up, api_key_env="MY_KEY", retry={"429": {"retries": 5}})
    assert s.api_key is not None and s.api_key.get_secret_value() == "sk-1"
    assert "sk-1" not in repr(s)
    assert s.retry["429"].retries == 5 and s.retry["429"].base_s == 1.0
    assert s.retry["503"].jitter == 1.0 and s.url == "http://h:1"
    with pytest.raises(ValidationError, match="retry keys"):
        UpstreamSettings(**up, retry={"418": {}})
    assert os.environ.get("NOPE_KEY") is None
