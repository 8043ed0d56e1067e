"""Resilience and formats end to end, against the scripted upstream: reasoning, tool
calls, 429 retried, failover, 502/504 in each API's shape, keep-alives, the breaker."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import openai
import pytest

from tests.conftest import Server
from tests.upstream.scripted import Scripted

MSG = [{"role": "user", "content": "2+2?"}]


def oa(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=30)


@pytest.mark.parametrize("model", ["think-ol", "think-oa"])
def test_think_text_becomes_reasoning_on_every_api(gateway: Server, model: str) -> None:
    reply = oa(gateway).chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]
    message = reply.choices[0].message
    assert message.content == "The answer is 4."
    assert message.reasoning_content == "Two plus two."  # type: ignore[attr-defined]
    events = list(oa(gateway).chat.completions.create(model=model, messages=MSG, stream=True))  # type: ignore[arg-type]
    deltas = [e.choices[0].delta for e in events if e.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Two plus two."
    assert "".join(d.content or "" for d in deltas) == "The answer is 4."
    native = ollama.Client(host=gateway.url).chat(model=model, messages=MSG)
    assert native.message.thinking == "Two plus two."
    assert native.message.content == "The answer is 4."


def test_tool_calls_translate_both_ways(gateway: Server, scripted: Scripted) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "w",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    # OpenAI client, Ollama-type upstream: object arguments become a JSON string
    reply = oa(gateway).chat.completions.create(model="tool-ol", messages=MSG, tools=tools)  # type: ignore[arg-type]
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert scripted.bodies["tool-ol"]["tools"][0]["function"]["name"] == "get_weather"
    # Ollama client, OpenAI-type upstream: streamed fragments arrive as one object
    native = ollama.Client(host=gateway.url).chat(model="tool-oa", messages=MSG, tools=tools)
    calls = native.message.tool_calls or []
    assert calls[0].function.arguments == {"city": "Paris"}


def test_options_translate_to_openai_upstream(gateway: Server, scripted: Scripted) -> None:
    ollama.Client(host=gateway.url).chat(
        model="think-oa",
        messages=[{"role": "system", "content": "be brief"}, *MSG],
        options={"num_predict": 7, "stop": ["x"], "seed": 3, "presence_penalty": 0.5},
        format="json",
    )
    body = scripted.bodies["think-oa"]
    assert body["max_tokens"] == 7 and body["stop"] == ["x"] and body["seed"] == 3
    assert body["presence_penalty"] == 0.5
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["stream"] is True


def test_429_is_retried_after_retry_after(gateway: Server, scripted: Scripted) -> None:
    for model in ("flaky-ol", "flaky-oa"):
        before = scripted.hits[model]
        t0 = time.monotonic()
        reply = oa(gateway).chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "ok from scripted"
        assert scripted.hits[model] == before + 2
        assert time.monotonic() - t0 >= 0.9  # Retry-After: 1 honoured


def test_dead_member_fails_over(gateway: Server, scripted: Scripted) -> None:
    """``s-reset`` (weight 5, healthy, but resets every chat) is tried first and failed
    over; ``dead`` (nothing listens) was marked unhealthy by its health check."""
    client = ollama.Client(host=gateway.url)
    before = scripted.hits["reset"]
    for _ in range(3):
        reply = client.chat(model="pool", messages=MSG)
        assert reply.message.content == "ok from scripted"
        assert (
            "".join(p.message.content for p in client.chat(model="pool", messages=MSG, stream=True))
            == "ok from scripted"
        )
    assert scripted.hits["reset"] > before
    with httpx.Client(base_url=gateway.url) as http:
        ups = {u["name"]: u for u in http.get("/admin/upstreams").json()["upstreams"]}
    assert ups["s-reset"]["breaker"]["failure_rate"] == 1.0
    assert ups["dead"]["healthy"] is False and "dead" not in str(ups["dead"]["breaker"])
    assert ups["s-pool"]["outstanding"] == 0


@pytest.mark.parametrize("model", ["fail", "reset", "garbage"])
def test_failing_upstream_is_502_in_each_shape(gateway: Server, model: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post("/api/chat", json={"model": model, "messages": MSG, "stream": False})
        assert r.status_code == 502, r.text
        assert isinstance(r.json()["error"], str) and "upstream" in r.json()["error"]
        r = http.post("/v1/chat/completions", json={"model": model, "messages": MSG})
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "upstream_error" and err["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        oa(gateway).chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]


def test_slow_upstream_is_504_within_its_timeout(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        t0 = time.monotonic()
        r = http.post("/api/chat", json={"model": "slow", "messages": MSG, "stream": False})
        assert r.status_code == 504 and "first_byte_timeout_s" in r.json()["error"]
        assert time.monotonic() - t0 < 2.5  # first_byte_timeout_s = 1
        r = http.post("/v1/chat/completions", json={"model": "slow", "messages": MSG})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_drop_mid_stream_ends_with_an_error_line(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post("/api/chat", json={"model": "drop", "messages": MSG})
        lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
        assert r.status_code == 200
        assert lines[0]["message"]["content"] == "ok"
        assert "error" in lines[-1] and len(lines) == 2  # nothing duplicated or retried


def test_keepalive_before_first_token(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post(
            "/v1/chat/completions", json={"model": "lazy", "messages": MSG, "stream": True}
        )
        assert r.text.startswith(": keep-alive\n\n")
    native = list(ollama.Client(host=gateway.url).chat(model="lazy", messages=MSG, stream=True))
    assert "".join(p.message.content for p in native) == "ok from scripted"
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        raw = http.post("/api/chat", json={"model": "lazy", "messages": MSG}).text
    assert raw.startswith(" ")  # whitespace before the first JSON value


def test_keepalive_then_timeout_is_an_error_event(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post(
            "/v1/chat/completions", json={"model": "slow", "messages": MSG, "stream": True}
        )
    assert r.status_code == 200 and r.text.startswith(": keep-alive")
    last = [x for x in r.text.split("\n\n") if x.startswith("data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == "timeout"


def test_breaker_opens_and_recovers(gateway: Server, scripted: Scripted) -> None:
    def state() -> dict[str, object]:
        with httpx.Client(base_url=gateway.url) as http:
            ups = http.get("/admin/upstreams").json()["upstreams"]
        breaker: dict[str, object] = next(u for u in ups if u["name"] == "s-brk")["breaker"]
        return breaker

    client = oa(gateway)
    scripted.fail_brk = True
    try:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="brk", messages=MSG)  # type: ignore[arg-type]
        assert state()["state"] == "open"
        hits = scripted.hits["brk"]
        with pytest.raises(openai.InternalServerError, match="circuit open"):
            client.chat.completions.create(model="brk", messages=MSG)  # type: ignore[arg-type]
        assert scripted.hits["brk"] == hits  # refused without calling the upstream
    finally:
        scripted.fail_brk = False
    time.sleep(1.1)  # open_s = 1
    assert state()["state"] == "half_open"
    for _ in range(2):  # half_open_calls = 2 trial calls succeed
        client.chat.completions.create(model="brk", messages=MSG)  # type: ignore[arg-type]
    assert state()["state"] == "closed"


def test_upstream_statuses_pass_through(gateway: Server, scripted: Scripted) -> None:
    """402, 422 and 503 keep their status, error shape and Retry-After; 402 is not retried."""
    ds = openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0, timeout=30)
    before = scripted.hits["broke"]
    with pytest.raises(openai.APIStatusError) as info:
        ds.chat.completions.create(model="broke", messages=MSG)  # type: ignore[arg-type]
    assert info.value.status_code == 402 and "Insufficient Balance" in str(info.value)
    assert scripted.hits["broke"] == before + 1, "402 is never retried"
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post("/chat/completions", json={"model": "broke", "messages": MSG, "stream": True})
        assert r.status_code == 402 and r.json()["error"]["message"] == "Insufficient Balance"
        r = http.post("/v1/chat/completions", json={"model": "tired", "messages": MSG})
        assert r.status_code == 422 and "bad field foo" in r.json()["error"]["message"]
        r = http.post("/v1/chat/completions", json={"model": "busy", "messages": MSG})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "server_error"
        assert scripted.hits["busy"] >= 2, "503 is retried before it is passed on"


def test_a_cut_reply_on_the_fast_path_is_a_clean_error(gateway: Server) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post("/v1/chat/completions", json={"model": "cut", "messages": MSG})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
        r = http.post("/v1/chat/completions", json={"model": "comments", "messages": MSG})
        assert r.status_code == 502, "comments and no body is no reply"
        body = {"model": "nochunk", "messages": MSG, "stream": True}
        events = http.post("/v1/chat/completions", json=body).text.split("\n\n")
        data = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
        assert data[0]["choices"][0]["delta"]["content"] == "a"
        assert "error" in data[-1] and "[DONE]" not in "".join(events)
        body = {"model": "comments", "messages": MSG, "stream": True}
        events = http.post("/v1/chat/completions", json=body).text.split("\n\n")
        assert "error" in json.loads([e for e in events if e.startswith("data: ")][-1][6:])
        r = http.post("/api/chat", json={"model": "nochunk-ol", "messages": MSG})
        lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
        assert lines[0]["message"]["content"] == "a" and "error" in lines[-1]
    client = oa(gateway)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="comments", messages=MSG, stream=True))  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="comments", messages=MSG)  # type: ignore[arg-type]


def test_a_non_streaming_reply_that_breaks_part_way_fails_over(
    gateway: Server, scripted: Scripted
) -> None:
    """Nothing had reached a non-streaming client: the next member answers it whole.
    A streaming client already has the first token, so its stream ends with an error."""
    dropped, fine = scripted.hits["drop"], scripted.hits["midfail-ok"]
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        r = http.post("/api/chat", json={"model": "midfail", "messages": MSG, "stream": False})
        assert r.status_code == 200, r.text
        assert r.json()["message"]["content"] == "ok from scripted" and r.json()["done"]
        r = http.post("/v1/chat/completions", json={"model": "midfail", "messages": MSG})
        assert (
            r.status_code == 200
            and r.json()["choices"][0]["message"]["content"] == "ok from scripted"
        )
        assert scripted.hits["drop"] == dropped + 2 and scripted.hits["midfail-ok"] == fine + 2
        r = http.post("/api/chat", json={"model": "midfail", "messages": MSG})
        lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
        assert lines[0]["message"]["content"] == "ok" and "error" in lines[-1]
