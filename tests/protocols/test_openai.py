"""OpenAI/DeepSeek wire <-> core, as pure functions (no server)."""

from __future__ import annotations

import pytest

from llmux.core.chunks import ChatChunk, Metrics
from llmux.core.request import ToolCall
from llmux.errors import InvalidRequest
from llmux.protocols.openai.convert import chat_to_core, completion_prompts, completion_to_core
from llmux.protocols.openai.stream import ChatRenderer, legacy_logprobs, usage_object
from llmux.protocols.openai.wire import ChatCompletionBody, CompletionBody

USER = [{"role": "user", "content": "hi"}]


def chat(**fields: object) -> ChatCompletionBody:
    return ChatCompletionBody.model_validate({"model": "m", "messages": USER, **fields})


def test_absent_sampling_fields_stay_model_defaults() -> None:
    s = chat_to_core(chat()).sampling
    assert s.temperature is None and s.top_p is None and s.num_predict is None


def test_fields_map_to_core() -> None:
    req = chat_to_core(
        chat(
            max_tokens=5,
            max_completion_tokens=9,
            temperature=0.2,
            stop="END",
            seed=1,
            n=3,
            logit_bias={"42": 500, "7": -3},
            logprobs=True,
            top_logprobs=2,
            options={"num_ctx": 2048, "top_k": 5},
            response_format={"type": "json_object"},
        )
    )
    assert req.sampling.num_predict == 9, "max_completion_tokens wins over max_tokens"
    assert req.sampling.temperature == 0.2 and req.sampling.stop == ("END",)
    assert req.sampling.top_k == 5 and req.load.num_ctx == 2048
    assert req.n == 3 and req.logit_bias == ((42, 100.0), (7, -3.0)) and req.top_logprobs == 2
    assert req.format == "json"


def test_messages_roles_history_and_prefix() -> None:
    req = chat_to_core(
        chat(
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "trace",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                {"role": "assistant", "content": "So", "prefix": True},
            ]
        )
    )
    roles = [m.role for m in req.messages]
    assert roles == ["system", "user", "assistant", "tool"] and req.prefix == "So"
    assert req.messages[1].content == "ab"
    assistant = req.messages[2]
    assert assistant.content == "" and assistant.thinking == "trace"
    assert assistant.tool_calls == (ToolCall(name="f", arguments={"x": 1}, id="c1", index=0),)
    assert req.messages[3].tool_name == "f", "tool_call_id is mapped to the tool's name"


@pytest.mark.parametrize(
    ("fields", "think"),
    [
        ({}, None),
        ({"thinking": {"type": "disabled"}}, False),
        ({"thinking": {"type": "enabled"}}, True),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "high"}, None),
    ],
)
def test_thinking_switches(fields: dict[str, object], think: object) -> None:
    assert chat_to_core(chat(**fields)).think == think


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "function": {"name": "f"}}, "f"),
    ],
)
def test_tool_choice(choice: object, expected: str) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat_to_core(chat(tools=tools, tool_choice=choice)).tool_choice == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": []},
        {"model": " "},
        {"logit_bias": {"x": 1}},
        {"top_logprobs": 1},
        {"messages": [{"role": "alien", "content": "x"}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        },
        {"messages": [{"role": "user", "content": [{"type": "input_video"}]}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                }
            ]
        },
    ],
)
def test_bad_input_is_invalid_request(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        chat_to_core(chat(**fields))


def test_completion_prompts_and_tokens() -> None:
    assert completion_prompts(CompletionBody(model="m", prompt="a")) == ["a"]
    assert completion_prompts(CompletionBody(model="m", prompt=["a", "b"])) == ["a", "b"]
    assert completion_prompts(CompletionBody(model="m", prompt=[1, 2])) == [[1, 2]]
    req = completion_to_core(CompletionBody(model="m", prompt=[1, 2], max_tokens=3), [1, 2])
    assert req.context == (1, 2) and req.prompt == "" and req.sampling.num_predict == 3
    with pytest.raises(InvalidRequest):
        completion_to_core(CompletionBody(model="m", prompt="a", best_of=3), "a")
    for empty in ([], [[]], [[1], []]):
        with pytest.raises(InvalidRequest, match="empty"):
            completion_prompts(CompletionBody(model="m", prompt=empty))


def test_renderer_streams_n_choices_and_usage() -> None:
    r = ChatRenderer("m", include_usage=True)
    done = ChatChunk(
        done=True,
        done_reason="stop",
        metrics=Metrics(prompt_tokens=10, cached_tokens=4, completion_tokens=2),
    )
    chunks = [
        ChatChunk(content="a", index=0),
        ChatChunk(content="b", index=1),
        ChatChunk(content="c", index=0, thinking=""),
        done,
        ChatChunk(
            done=True,
            done_reason="length",
            index=1,
            metrics=Metrics(prompt_tokens=10, completion_tokens=1),
        ),
    ]
    out = [obj for c in chunks for obj in r.chunk(c)]
    assert all(o["usage"] is None and o["id"] == r.id for o in out)
    firsts = [o for o in out if o["choices"][0]["delta"].get("role")]
    assert [o["choices"][0]["index"] for o in firsts] == [0, 1]
    finals = [
        (o["choices"][0]["index"], o["choices"][0]["finish_reason"])
        for o in out
        if o["choices"][0]["finish_reason"]
    ]
    assert finals == [(0, "stop"), (1, "length")]
    texts = [o["choices"][0]["delta"] for o in out if not o["choices"][0]["finish_reason"]]
    assert all(isinstance(d["content"], str) for d in texts)
    assert all(o["choices"][0]["delta"] == {} for o in out if o["choices"][0]["finish_reason"]), (
        "the closing delta is {} as in OpenAI and DeepSeek"
    )
    usage = r.usage_chunk()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["prompt_tokens"] == 10, "prompt tokens count once, not per choice"
    whole = r.whole()
    assert [c["message"]["content"] for c in whole["choices"]] == ["ac", "b"]


def test_reasoning_and_tool_call_deltas_carry_null_content() -> None:
    """As DeepSeek: ``content is not None`` means the answer has started."""
    r = ChatRenderer("m")
    out = [
        obj
        for c in (
            ChatChunk(thinking="let me see"),
            ChatChunk(thinking=" more"),
            ChatChunk(content="Hi"),
            ChatChunk(tool_calls=(ToolCall(name="f", arguments={}, id="call_1"),)),
            ChatChunk(done=True, done_reason="stop"),
        )
        for obj in r.chunk(c)
    ]
    deltas = [o["choices"][0]["delta"] for o in out]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert [d["content"] for d in deltas[1:3]] == [None, None]
    assert all(d["reasoning_content"] for d in deltas[1:3])
    assert deltas[3] == {"content": "Hi"}
    assert deltas[4]["content"] is None and deltas[4]["tool_calls"]
    assert deltas[5] == {}


def test_a_reply_that_opens_with_text_starts_with_empty_content() -> None:
    out = ChatRenderer("m").chunk(ChatChunk(content="Hi"))
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_renderer_tool_calls_and_reasoning() -> None:
    r = ChatRenderer("m", reasoning_fields=("reasoning_content", "reasoning"))
    r.chunk(ChatChunk(thinking="hmm"))
    r.chunk(ChatChunk(tool_calls=(ToolCall(name="f", arguments={"x": 1}, id="call_1"),)))
    out = r.chunk(
        ChatChunk(
            done=True, done_reason="stop", metrics=Metrics(completion_tokens=5, reasoning_tokens=2)
        )
    )
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    msg = r.whole()["choices"][0]["message"]
    assert msg["content"] is None and msg["reasoning_content"] == msg["reasoning"] == "hmm"
    assert msg["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    assert r.usage()["completion_tokens_details"] == {"reasoning_tokens": 2}


def test_usage_object_adds_up() -> None:
    u = usage_object(Metrics(prompt_tokens=30, cached_tokens=12), 7, 3)
    assert (
        u["total_tokens"] == 37
        and u["prompt_cache_hit_tokens"] + u["prompt_cache_miss_tokens"] == 30
    )
    assert usage_object(None, 0, 0)["prompt_tokens"] == 0


def test_legacy_logprobs_offsets() -> None:
    from llmux.core.chunks import TokenLogprob

    items = (
        TokenLogprob("Hel", -0.1, b"Hel", (("Hel", -0.1, b"Hel"),)),
        TokenLogprob("lo", -0.5, b"lo", ()),
    )
    lp = legacy_logprobs(items)
    assert lp["tokens"] == ["Hel", "lo"] and lp["text_offset"] == [0, 3]
    assert lp["top_logprobs"][0] == {"Hel": -0.1}


def test_parallel_tool_calls_false_keeps_one_call() -> None:
    calls = tuple(ToolCall(name=f"f{i}", arguments={}, id=f"c{i}", index=i) for i in range(3))
    for parallel, expected in ((True, 3), (False, 1)):
        r = ChatRenderer("m", parallel_tool_calls=parallel)
        streamed = r.chunk(ChatChunk(tool_calls=calls))
        r.chunk(ChatChunk(done=True, done_reason="stop", metrics=Metrics()))
        assert len(r.whole()["choices"][0]["message"]["tool_calls"]) == expected
        assert len(streamed[-1]["choices"][0]["delta"]["tool_calls"]) == expected
