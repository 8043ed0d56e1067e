"""The official ``openai`` SDK against llmux's ``/v1`` (checklist O30-O46, C50-C52).

Every test drives the real server with the bundled SmolLM2 model; the SDK's own
parsing is part of what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import MODEL, Server
from tests.support.models import add_params

pytestmark = pytest.mark.model
USER = [{"role": "user", "content": "Name three colours."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def collect_stream(stream: Any) -> tuple[list[Any], str]:
    chunks = list(stream)
    return chunks, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- chat completions ---------------------------------------------------------------


def test_chat_non_stream_shape_and_usage(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert isinstance(r.created, int) and r.model == MODEL
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u is not None and u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    extra = u.model_dump()
    assert extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"] == u.prompt_tokens
    assert u.completion_tokens_details is not None
    assert u.completion_tokens_details.reasoning_tokens == 0


def test_ids_are_unique(client: OpenAI) -> None:
    ids = {
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1).id
        for _ in range(3)
    }
    assert len(ids) == 3, "Ollama's /v1 reuses chatcmpl-<n> ids; llmux must not"


def test_stream_shape(client: OpenAI) -> None:
    chunks, text = collect_stream(
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12, stream=True)
    )
    assert text
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(isinstance(c.choices[0].delta.content, str) for c in chunks[:-1]), (
        "text deltas carry content as a string"
    )
    assert chunks[-1].choices[0].delta.model_dump(exclude_none=True) == {}, "closing delta {}"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert all(c.usage is None for c in chunks), "no usage chunk without include_usage"


def test_stream_include_usage(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=USER,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    n_text = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert last.usage.completion_tokens >= n_text > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_raw_sse_framing(server: Server) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[len("data: ") :])


def test_stream_equals_non_stream_at_temperature_zero(client: OpenAI) -> None:
    args: dict[str, Any] = {
        "model": MODEL,
        "messages": USER,
        "max_tokens": 24,
        "temperature": 0,
        "seed": 7,
    }
    whole = client.chat.completions.create(**args).choices[0].message.content
    _, streamed = collect_stream(client.chat.completions.create(**args, stream=True))
    assert streamed == whole


def test_multi_turn_program_with_reply_plus_equals_delta(client: OpenAI) -> None:
    """A chat program as people write it against DeepSeek/Ollama, run unmodified."""
    history: list[dict[str, str]] = [{"role": "system", "content": "You are brief."}]
    for question in ("Hi, who are you?", "What is 2+2?", "And 3+3?"):
        history.append({"role": "user", "content": question})
        reply = ""
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=history,
            stream=True,
            max_tokens=16,  # type: ignore[arg-type]
        ):
            if chunk.choices:
                reply += chunk.choices[0].delta.content or ""
        assert reply.strip()
        history.append({"role": "assistant", "content": reply})
    assert len(history) == 7


def test_n_generates_n_choices(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=8, n=2, temperature=1.0, seed=3
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens >= 2

    chunks = list(
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, n=2, stream=True)
    )
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_max_tokens_and_stop(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 1
    r = client.chat.completions.create(model=MODEL, messages=USER, max_completion_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 2
    story = [{"role": "user", "content": "Write a poem of four lines about the sea."}]
    for stop in ("\n", ["\n", "."]):
        r = client.chat.completions.create(
            model=MODEL,
            messages=story,
            max_tokens=60,
            temperature=0,
            stop=stop,  # type: ignore[arg-type]
        )
        text = r.choices[0].message.content or ""
        assert "\n" not in text and r.choices[0].finish_reason == "stop"
        if isinstance(stop, list):
            assert "." not in text


def test_logprobs_with_top_alternatives(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=5, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs and r.choices[0].logprobs.content
    assert content and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
    text = "".join(t.token for t in content)
    assert text == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes or []) == t.token.encode()
        assert len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob


def test_logit_bias_steers_tokens(client: OpenAI, vocab: Any) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": USER, "max_tokens": 3, "temperature": 0}
    first = client.chat.completions.create(**args, logprobs=True).choices[0].logprobs
    assert first and first.content
    greedy = vocab.tokenize(first.content[0].token.encode(), add_bos=False, special=True)
    assert len(greedy) == 1
    banned = client.chat.completions.create(
        **args, logprobs=True, logit_bias={str(greedy[0]): -100}
    )
    assert banned.choices[0].logprobs.content[0].token != first.content[0].token  # type: ignore[union-attr]
    (banana,) = vocab.tokenize(b" banana", add_bos=False, special=False)
    forced = client.chat.completions.create(**args, logit_bias={str(banana): 100})
    assert forced.choices[0].message.content == " banana" * 3


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_time"}}]
)
def test_forced_tool_calls_are_valid(client: OpenAI, choice: Any) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice=choice,
        max_tokens=80,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls
    for call in c.message.tool_calls:
        assert call.id and call.type == "function"
        spec = next(t for t in (WEATHER, TIME) if t["function"]["name"] == call.function.name)
        jsonschema.validate(json.loads(call.function.arguments), spec["function"]["parameters"])
        if isinstance(choice, dict):
            assert call.function.name == "get_time"


def test_tool_choice_none_never_calls(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=20,
    )
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason != "tool_calls"


def test_streamed_tool_call_fragments_and_follow_up_turn(client: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=[WEATHER],
            tool_choice="required",  # type: ignore[list-item]
            max_tokens=80,
            stream=True,
        )
    )
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for frag in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(frag.index, {"id": "", "name": "", "arguments": ""})
            if frag.id:
                assert frag.type == "function" and frag.function and frag.function.name
                entry["id"], entry["name"] = frag.id, frag.function.name
            entry["arguments"] += (frag.function and frag.function.arguments) or ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert calls and all(c["id"] and c["name"] == "get_weather" for c in calls.values())
    call = calls[0]
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])  # type: ignore[index]

    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 21}'})
    r = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
        max_tokens=20,  # type: ignore[list-item]
        seed=3,
    )
    # the follow-up turn (assistant tool_calls + tool result) is accepted and answered;
    # what a 135M model answers, even an immediate end, is up to it
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.choices[0].message.role == "assistant"


def test_json_object_and_json_schema(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a cat."}],
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
        seed=1,
    )
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict), (
        "JSON mode is enforced by grammar; the prompt need not say 'json'"
    )
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
        max_tokens=120,
        temperature=0,
        seed=1,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)


# -- errors -------------------------------------------------------------------------


def test_unknown_model_is_not_found_error(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=USER)
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error" and "no-such-model" in err["message"]


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": []},
        {"temperature": 5},
        {"n": 0},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"response_format": {"type": "xml"}},
        {"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]},
        {"logit_bias": {"not-a-token": 1}},
        {"top_logprobs": 2},
        {"stop": ["x"] * 17},
        {"max_tokens": -1},
    ],
)
def test_bad_fields_are_bad_request(client: OpenAI, bad: dict[str, Any]) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": USER, "max_tokens": 2, **bad}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**args)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and body["message"]


def test_error_shape_on_the_wire(server: Server) -> None:
    for body in (b"{not json", b""):
        r = httpx.post(server.url + "/v1/chat/completions", content=body, timeout=30)
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(server.url + "/v1/chat/completions", timeout=30)
    assert r.status_code == 405 and r.json()["error"]["message"]
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=b"x" * (33 * 1024 * 1024),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_images_need_data_uris_and_a_vision_model(client: OpenAI) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
    for url, words in (
        (f"data:image/png;base64,{png}", "does not support vision"),
        ("https://example.com/cat.png", "data URI"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ],
            )
        assert words in str(info.value)


def test_mid_stream_error_event_makes_the_sdk_raise() -> None:
    """A failure after the stream started is a ``data: {"error": ...}`` event."""
    from llmux.errors import BackendError
    from llmux.server.streaming import encoded

    async def failing() -> Any:
        yield {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
        raise BackendError("the model crashed")

    async def render() -> bytes:
        return "".join([e async for e in encoded(failing(), True, "/v1/chat/completions")]).encode()

    payload = asyncio.run(render())
    assert payload.rstrip().endswith(b'"code": "backend_error"}}') or b"backend_error" in payload
    assert b"[DONE]" not in payload

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload, headers={"content-type": "text/event-stream"})

    sdk = OpenAI(
        base_url="http://test/v1",
        api_key="x",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(openai.APIError, match="the model crashed"):
        list(sdk.chat.completions.create(model="m", messages=USER, stream=True))


# -- completions, embeddings, models -------------------------------------------------


def test_completions(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.choices[0].text
    assert r.usage and r.usage.completion_tokens <= 5

    r = client.completions.create(
        model=MODEL, prompt=["One, two,", "Red, green,"], max_tokens=3, echo=True, temperature=0
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text.startswith("One, two,") and r.choices[1].text.startswith("Red, green,")

    r = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp and lp.tokens and len(lp.tokens) == len(lp.token_logprobs or [])
    assert "".join(lp.tokens) == r.choices[0].text and lp.text_offset and lp.text_offset[0] == 0


def test_completions_stream_and_token_prompt(client: OpenAI, vocab: Any) -> None:
    chunks = list(
        client.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, stream=True)
    )
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].text for c in chunks)

    tokens = vocab.tokenize(b"The capital of France is", add_bos=False, special=False)
    as_tokens = client.completions.create(model=MODEL, prompt=tokens, max_tokens=4, temperature=0)
    as_text = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert as_tokens.choices[0].text == as_text.choices[0].text


def test_completions_suffix_needs_an_insert_model(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="insert"):
        client.completions.create(model=MODEL, prompt="def f(", suffix="return x", max_tokens=4)


def test_embeddings_float_base64_and_dimensions(client: OpenAI) -> None:
    one = client.embeddings.create(model=MODEL, input="hello world")
    assert len(one.data) == 1 and one.usage.prompt_tokens > 0
    vec = one.data[0].embedding
    raw = client.embeddings.with_raw_response.create(
        model=MODEL, input="hello world", encoding_format="base64"
    )
    b64 = json.loads(raw.text)["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(vec)}f", base64.b64decode(b64))
    assert decoded == pytest.approx(vec, rel=1e-6)
    many = client.embeddings.create(model=MODEL, input=["a", "b", "c"], dimensions=16)
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(len(d.embedding) == 16 for d in many.data)


def test_models_list_and_retrieve(client: OpenAI) -> None:
    models = client.models.list().data
    entry = next(m for m in models if m.id == MODEL)
    assert entry.object == "model" and isinstance(entry.created, int) and entry.owned_by
    assert client.models.retrieve(MODEL).id == MODEL
    assert client.models.retrieve("library/smollm2:135m").id == "library/smollm2:135m"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope:1b")


# -- the gaps of Ollama's /v1 layer ---------------------------------------------------


def test_absent_temperature_uses_model_defaults(client: OpenAI, server: Server) -> None:
    """ollama#17744: Ollama's /v1 forces temperature 1.0; llmux keeps the Modelfile's."""
    name = add_params(
        server.home, "smollm2-greedy:135m", MODEL, {"temperature": 0, "num_predict": 12}
    )
    prompt = [{"role": "user", "content": "Tell me a story about a dragon."}]
    replies = {
        client.chat.completions.create(model=name, messages=prompt).choices[0].message.content
        for _ in range(3)
    }
    assert len(replies) == 1, "the model's temperature 0 applies when the request has none"
    r = client.chat.completions.create(model=name, messages=prompt)
    assert r.usage and r.usage.completion_tokens <= 12, "and its num_predict too"
    # /api/chat adds Ollama's default repeat_penalty 1.1, which /v1 (neutral) leaves off
    native = httpx.post(
        server.url + "/api/chat",
        json={
            "model": name,
            "messages": prompt,
            "stream": False,
            "options": {"repeat_penalty": 1.0},
        },
        timeout=60,
    )
    assert native.json()["message"]["content"] in replies, "the model's parameters on both"


def test_native_options_pass_through(client: OpenAI, server: Server) -> None:
    """ollama#2677: num_ctx can't be set through Ollama's /v1; llmux takes `options`."""
    client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=1, extra_body={"options": {"num_ctx": 1024}}
    )
    ps = httpx.get(server.url + "/api/ps", timeout=10).json()["models"]
    assert next(m for m in ps if m["name"] == MODEL)["context_length"] == 1024
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=USER, max_tokens=1, extra_body={"options": {"num_ctx": "big"}}
        )
    client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)  # back to default


def test_async_client_concurrent_requests(server: Server) -> None:
    async def main() -> list[str]:
        async with AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:

            async def one(q: str) -> str:
                stream = await c.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": q}],
                    max_tokens=8,
                    stream=True,
                )
                return "".join(
                    [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
                )

            whole = await c.chat.completions.create(model=MODEL, messages=USER, max_tokens=4)
            assert whole.choices[0].message.content
            return list(await asyncio.gather(one("Hi"), one("Hello there")))

    assert all(asyncio.run(main()))
