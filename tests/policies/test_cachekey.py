"""The response cache's key, property-style (variations generated deterministically):
every field that can change a reply changes the key; keep_alive and the stream mode
do not; tenants never share one; None differs from a default value."""

from __future__ import annotations

import dataclasses
import random
import typing
from typing import Any

import pytest

from llmux.core.context import Principal, RequestContext
from llmux.core.request import (
    ChatRequest,
    LoadOptions,
    Message,
    Sampling,
    Tool,
    ToolCall,
)
from llmux.policies import Operation
from llmux.policies.cachekey import KeyMaker

CLASSES = (ChatRequest, Sampling, LoadOptions, Message, Tool)
NOT_IN_KEY = {(ChatRequest, "keep_alive")}
ALICE = Principal(kind="key", id="k1", name="alice", user_id="u1")
SEEDS = range(12)


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def sample(tp: Any, rng: random.Random) -> Any:
    """A value of type ``tp`` (a non-None one where ``tp`` is optional)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return rng.choice(args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return sample(rng.choice([a for a in args if a is not type(None)]), rng)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(sample(args[0], rng) for _ in range(rng.randint(1, 2)))
        return tuple(sample(a, rng) for a in args)
    if origin is dict:
        return {f"k{rng.randint(0, 9)}": rng.randint(0, 9)}
    if tp is bool:
        return rng.random() < 0.5
    if tp is int:
        return rng.randint(1, 999)
    if tp is float:
        return round(rng.uniform(0.1, 2.0), 3)
    if tp is str:
        return rng.choice(["hi", "sky", "blue", "x"]) + str(rng.randint(0, 99))
    if tp is bytes:
        return rng.randbytes(rng.randint(1, 8))
    if tp is Any:
        return rng.choice(["json", {"type": "object"}, "auto"])
    if dataclasses.is_dataclass(tp):
        return build(tp, rng)  # type: ignore[arg-type]
    raise AssertionError(f"no sample for {tp!r}")


def build(cls: type, rng: random.Random) -> Any:
    """An instance with some fields set, some left at their defaults."""
    values: dict[str, Any] = {}
    types = hints(cls)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required or rng.random() < 0.5:
            values[f.name] = sample(types[f.name], rng)
    if cls is Message:
        values["role"] = rng.choice(["system", "user", "assistant", "tool"])
    return cls(**values)


def changed(value: Any, tp: Any, rng: random.Random) -> list[Any]:
    """Values of type ``tp`` different from ``value`` (None among them where allowed)."""
    out = []
    for _ in range(8):
        other = sample(tp, rng)
        if other != value and other not in out:
            out.append(other)
    if value is not None and type(None) in typing.get_args(tp):
        out.append(None)
    if isinstance(value, tuple) and value:
        out.append(value[:-1])  # one fewer
        out.append(value + value[-1:])  # one more
    return out[:5]


def op_of(*requests: ChatRequest, stream: bool = False) -> Operation:
    return Operation("chat", requests[0].model, stream, "local", requests=requests)


def key(request: ChatRequest, ctx: RequestContext | None = None, stream: bool = False) -> str:
    ctx = ctx or RequestContext("ollama", "/api/chat", principal=ALICE)
    return KeyMaker().key(ctx, op_of(request, stream=stream), "local:|local:m@abc")


def base_request(rng: random.Random) -> ChatRequest:
    return dataclasses.replace(
        build(ChatRequest, rng),
        model="m:latest",
        messages=tuple(build(Message, rng) for _ in range(rng.randint(1, 3))),
        tools=tuple(build(Tool, rng) for _ in range(rng.randint(0, 2))),
        sampling=build(Sampling, rng),
        load=build(LoadOptions, rng),
    )


def with_field(request: ChatRequest, cls: type, name: str, value: Any) -> ChatRequest:
    """``request`` with field ``name`` of its ``cls`` part(s) set to ``value``."""
    if cls is ChatRequest:
        return dataclasses.replace(request, **{name: value})
    if cls is Sampling:
        return dataclasses.replace(
            request, sampling=dataclasses.replace(request.sampling, **{name: value})
        )
    if cls is LoadOptions:
        return dataclasses.replace(request, load=dataclasses.replace(request.load, **{name: value}))
    if cls is Message:
        first = dataclasses.replace(request.messages[0], **{name: value})
        return dataclasses.replace(request, messages=(first, *request.messages[1:]))
    assert cls is Tool
    tools = request.tools or (Tool("t"),)
    return dataclasses.replace(
        request, tools=(dataclasses.replace(tools[0], **{name: value}), *tools[1:])
    )


def current(request: ChatRequest, cls: type, name: str) -> Any:
    part = {ChatRequest: request, Sampling: request.sampling, LoadOptions: request.load}.get(cls)
    if cls is Message:
        part = request.messages[0]
    if cls is Tool:
        part = (request.tools or (Tool("t"),))[0]
    return getattr(part, name)


FIELDS = [(cls, f.name) for cls in CLASSES for f in dataclasses.fields(cls)]


@pytest.mark.parametrize(("cls", "name"), FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FIELDS])
def test_every_field_changes_the_key(cls: type, name: str) -> None:
    tp = hints(cls)[name]
    tried = 0
    for seed in SEEDS:
        rng = random.Random(f"{cls.__name__}.{name}.{seed}")
        request = base_request(rng)
        if cls is Tool and not request.tools:
            request = dataclasses.replace(request, tools=(Tool("t"),))
        if name == "model" and cls is ChatRequest:
            continue  # the gateway sets it to the resolved name: see test_the_model_is_in_the_key
        before = key(request)
        for value in changed(current(request, cls, name), tp, rng):
            other = with_field(request, cls, name, value)
            tried += 1
            if (cls, name) in NOT_IN_KEY:
                assert key(other) == before, f"{cls.__name__}.{name}={value!r} changed the key"
            else:
                assert key(other) != before, f"{cls.__name__}.{name}={value!r} kept the key"
    assert tried or name == "model", f"no variation of {cls.__name__}.{name} was tried"


def test_the_model_is_in_the_key() -> None:
    request = ChatRequest("a:latest", (Message("user", "hi"),))
    assert key(request) != key(dataclasses.replace(request, model="b:latest"))


def test_none_differs_from_the_default_value() -> None:
    request = ChatRequest("m", (Message("user", "hi"),))
    pairs: list[tuple[Any, Any]] = [
        (Sampling(temperature=None), Sampling(temperature=0.0)),
        (Sampling(seed=None), Sampling(seed=0)),
        (Sampling(num_predict=None), Sampling(num_predict=0)),
        (Sampling(top_k=None), Sampling(top_k=40)),
    ]
    for a, b in pairs:
        assert key(dataclasses.replace(request, sampling=a)) != key(
            dataclasses.replace(request, sampling=b)
        )
    for fields in (
        {"prompt": ""},
        {"suffix": ""},
        {"think": False},
        {"format": ""},
        {"top_logprobs": 0},
    ):
        assert key(request) != key(dataclasses.replace(request, **fields)), fields
    assert key(request) != key(dataclasses.replace(request, load=LoadOptions(num_ctx=2048)))
    # types never collide: 1, 1.0 and True; "1" and 1
    assert len({key(dataclasses.replace(request, format=v)) for v in (1, 1.0, True, "1")}) == 4  # type: ignore[arg-type]


def test_num_ctx_and_the_system_prompt_are_in_the_key() -> None:
    user = Message("user", "Why is the sky blue?")
    plain = ChatRequest("m", (user,))
    assert key(plain) != key(dataclasses.replace(plain, load=LoadOptions(num_ctx=4096)))
    assert key(dataclasses.replace(plain, load=LoadOptions(num_ctx=4096))) != key(
        dataclasses.replace(plain, load=LoadOptions(num_ctx=8192))
    )
    with_system = dataclasses.replace(plain, messages=(Message("system", "Be brief."), user))
    other_system = dataclasses.replace(plain, messages=(Message("system", "Be long."), user))
    assert len({key(plain), key(with_system), key(other_system)}) == 3


def test_keep_alive_and_stream_mode_leave_the_key() -> None:
    rng = random.Random(7)
    for _ in range(20):
        request = base_request(rng)
        k = key(request)
        assert key(dataclasses.replace(request, keep_alive=rng.uniform(0, 999))) == k
        assert key(dataclasses.replace(request, keep_alive=None)) == k
        assert key(request, stream=True) == key(request, stream=False) == k


def test_tenants_never_share_a_key() -> None:
    request = ChatRequest("m", (Message("user", "hi"),), sampling=Sampling(temperature=0))
    principals = [
        Principal(),
        Principal(kind="key", id="k1", user_id="u1"),
        Principal(kind="key", id="k2", user_id="u1"),  # the same user's other key
        Principal(kind="key", id="k1", user_id="u2"),
        Principal(kind="user", id="u1", user_id="u1"),
        Principal(kind="client", id="k1"),
        Principal(kind="token", id="k1"),
    ]
    keys = {
        key(request, RequestContext("openai", "/v1/chat/completions", principal=p))
        for p in principals
    }
    assert len(keys) == len(principals)
    # the name and scopes do not matter: the same credential is the same tenant
    renamed = Principal(
        kind="key", id="k1", name="renamed", user_id="u1", scopes=frozenset({"admin"})
    )
    ctx = RequestContext("openai", "/v1/chat/completions", principal=renamed)
    same = RequestContext(
        "openai", "/v1/chat/completions", principal=Principal(kind="key", id="k1", user_id="u1")
    )
    assert key(request, ctx) == key(request, same)


def test_api_route_and_what_serves_it_are_in_the_key() -> None:
    request = ChatRequest("m", (Message("user", "hi"),))
    maker = KeyMaker()
    op = op_of(request)
    ctxs = [
        RequestContext("ollama", "/api/chat"),
        RequestContext("openai", "/v1/chat/completions"),
        RequestContext("deepseek", "/chat/completions"),
        RequestContext("openai", "/v1/completions"),
    ]
    assert len({maker.key(c, op, "x") for c in ctxs}) == len(ctxs)
    served = ["local||", "local|local:m@abc|", "local|local:m@abd|", "pool||a=m", "pool||b=m"]
    assert len({maker.key(ctxs[0], op, s) for s in served}) == len(served)


def test_dict_order_does_not_matter_and_images_are_hashed() -> None:
    schema_a = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    schema_b = {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "type": "object"}
    request = ChatRequest("m", (Message("user", "hi"),), format=schema_a)
    assert key(request) == key(dataclasses.replace(request, format=schema_b))
    img = dataclasses.replace(request, messages=(Message("user", "hi", images=(b"\x89PNG1",)),))
    other = dataclasses.replace(request, messages=(Message("user", "hi", images=(b"\x89PNG2",)),))
    assert key(img) != key(other) != key(request)
    assert "PNG" not in KeyMaker().canonical(img)  # the bytes are hashed, not kept


def test_several_prompts_are_all_in_the_key() -> None:
    a = ChatRequest("m", prompt="one")
    b = ChatRequest("m", prompt="two")
    maker = KeyMaker()
    ctx = RequestContext("openai", "/v1/completions")
    keys = {maker.key(ctx, op_of(*reqs), "") for reqs in [(a,), (b,), (a, b), (b, a)]}
    assert len(keys) == 4


def test_tool_calls_in_history_are_in_the_key() -> None:
    call = ToolCall("get_weather", {"city": "Paris"}, "c1")
    base = ChatRequest("m", (Message("assistant", tool_calls=(call,)),))
    other = ChatRequest(
        "m",
        (
            Message(
                "assistant", tool_calls=(dataclasses.replace(call, arguments={"city": "Rome"}),)
            ),
        ),
    )
    assert key(base) != key(other)


def test_a_value_without_a_stable_form_cannot_be_keyed() -> None:
    request = ChatRequest("m", (Message("user", "hi"),), format={"enum": {1, 2}})  # a set
    with pytest.raises(TypeError):
        key(request)
