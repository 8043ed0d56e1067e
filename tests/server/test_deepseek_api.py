"""DeepSeek's conventions on llmux (checklist D53-D60, D63, C51, X67).

A thinking model and a FIM model are made from the bundled weights with other GGUF
metadata (see ``tests/support``); aliases come from a TOML ``[aliases]`` table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import MODEL, Server, start_server
from tests.support.models import THINKING_TEMPLATE, add_variant

pytestmark = pytest.mark.model
THINKER = "smollm2-think:135m"
FIM = "smollm2-fim:135m"
ASK = [{"role": "user", "content": "Is 17 a prime number?"}]


@pytest.fixture(scope="module")
def models(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("variants")
    add_variant(server.home, THINKER, {"tokenizer.chat_template": THINKING_TEMPLATE}, work)
    # SmolLM2 has no FIM tokens of its own; three of its special tokens stand in
    fim = {
        "tokenizer.ggml.fim_pre_token_id": 3,
        "tokenizer.ggml.fim_suf_token_id": 4,
        "tokenizer.ggml.fim_mid_token_id": 5,
    }
    add_variant(server.home, FIM, fim, work)
    return {"thinker": THINKER, "fim": FIM}


@pytest.fixture(scope="module")
def ds(server: Server) -> Iterator[OpenAI]:
    """DeepSeek style: base URL at the root, no /v1."""
    with OpenAI(base_url=server.url, api_key="unused", max_retries=0) as c:
        yield c


def test_bare_root_routes(ds: OpenAI, server: Server) -> None:
    r = ds.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4)
    assert r.choices[0].message.content and r.id.startswith("chatcmpl-")
    assert MODEL in [m.id for m in ds.models.list().data]
    raw = httpx.get(server.url + "/models", timeout=10).json()["data"]
    assert all({"id", "object", "owned_by"} <= set(m) for m in raw)
    assert ds.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices[0].text is not None
    with pytest.raises(openai.NotFoundError):
        ds.chat.completions.create(model="deepseek-nothing", messages=ASK)


def test_usage_has_cache_hit_and_miss_tokens(ds: OpenAI) -> None:
    long_system = {"role": "system", "content": "You answer questions about numbers. " * 30}
    first = ds.chat.completions.create(model=MODEL, messages=[long_system, *ASK], max_tokens=2)
    again = ds.chat.completions.create(model=MODEL, messages=[long_system, *ASK], max_tokens=2)
    for r in (first, again):
        u = r.usage.model_dump()  # type: ignore[union-attr]
        assert u["prompt_cache_hit_tokens"] + u["prompt_cache_miss_tokens"] == u["prompt_tokens"]
        assert u["prompt_tokens_details"]["cached_tokens"] == u["prompt_cache_hit_tokens"]
        assert u["completion_tokens_details"]["reasoning_tokens"] == 0
    hit = again.usage.model_dump()["prompt_cache_hit_tokens"]  # type: ignore[union-attr]
    assert hit >= 64, "the repeated prefix is reused from the engine's cache"


def test_reasoning_content_non_stream(ds: OpenAI, models: dict[str, str]) -> None:
    r = ds.chat.completions.create(model=THINKER, messages=ASK, max_tokens=24)
    msg = r.choices[0].message.model_dump()
    assert msg["reasoning_content"], "the trace goes to reasoning_content"
    assert "<think>" not in (msg["content"] or "") and msg["reasoning_content"] not in (
        msg["content"] or "x"
    )
    assert "reasoning" not in msg, "Ollama's spelling is off unless configured"
    u = r.usage.model_dump()  # type: ignore[union-attr]
    assert 0 < u["completion_tokens_details"]["reasoning_tokens"] <= u["completion_tokens"]


def test_reasoning_streams_before_content(ds: OpenAI, models: dict[str, str]) -> None:
    chunks = list(
        ds.chat.completions.create(model=THINKER, messages=ASK, max_tokens=24, stream=True)
    )
    deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]
    kinds = [
        "r" if d.get("reasoning_content") else "c"
        for d in deltas
        if d.get("reasoning_content") or d.get("content")
    ]
    assert kinds and kinds[0] == "r"
    assert "".join(kinds) == "r" * kinds.count("r") + "c" * kinds.count("c"), (
        "never reasoning after content"
    )
    for d in deltas:  # as DeepSeek: reasoning-only deltas have content null
        if d.get("reasoning_content"):
            assert d["content"] is None, d
    assert deltas[-1]["content"] is None and chunks[-1].choices[0].finish_reason, "closing {}"


def test_thinking_switches(ds: OpenAI, models: dict[str, str]) -> None:
    off = ds.chat.completions.create(
        model=THINKER, messages=ASK, max_tokens=12, extra_body={"thinking": {"type": "disabled"}}
    )
    assert not off.choices[0].message.model_dump().get("reasoning_content")
    assert off.choices[0].message.content
    none = ds.chat.completions.create(
        model=THINKER, messages=ASK, max_tokens=12, reasoning_effort="none"
    )  # type: ignore[arg-type]
    assert not none.choices[0].message.model_dump().get("reasoning_content")
    on = ds.chat.completions.create(
        model=THINKER,
        messages=ASK,
        max_tokens=12,
        reasoning_effort="high",
        temperature=0.3,
        top_p=0.5,
        presence_penalty=1,  # accepted on thinking requests
        extra_body={"thinking": {"type": "enabled"}},
    )
    assert on.choices[0].message.model_dump()["reasoning_content"]


def test_thinking_on_a_model_that_cannot_think(ds: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        ds.chat.completions.create(
            model=MODEL, messages=ASK, extra_body={"thinking": {"type": "enabled"}}
        )
    # reasoning_effort is a hint many clients always send: ignored where it can't apply
    r = ds.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, reasoning_effort="high")
    assert r.choices[0].message.content


def test_history_with_reasoning_content_and_tool_calls(ds: OpenAI, models: dict[str, str]) -> None:
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "SECRET-TRACE check divisors",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "is_prime", "arguments": '{"n": 17}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "true"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "is_prime",
                "parameters": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                },
            },
        }
    ]
    r = ds.chat.completions.create(model=THINKER, messages=history, tools=tools, max_tokens=8)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    native = httpx.post(
        str(ds.base_url).rstrip("/") + "/api/chat",
        json={
            "model": THINKER,
            "messages": history[:2],
            "stream": False,
            "options": {"num_predict": 1},
        },
        timeout=60,
    )
    assert native.status_code == 200


def test_reasoning_field_names_are_configurable(
    tmp_path: Path, models: dict[str, str], server: Server
) -> None:
    home = tmp_path / "home"
    (home / "models").parent.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(server.home / "models")
    srv = start_server(
        home, extra_env={"LLMUX_SERVER__REASONING_FIELDS": '["reasoning", "reasoning_content"]'}
    )
    try:
        r = httpx.post(
            srv.url + "/v1/chat/completions",
            timeout=60,
            json={"model": THINKER, "messages": ASK, "max_tokens": 8},
        ).json()
        msg = r["choices"][0]["message"]
        assert msg["reasoning"] and msg["reasoning"] == msg["reasoning_content"]
    finally:
        srv.stop()


def test_prefix_completion_continues_and_stop_applies(server: Server) -> None:
    beta = OpenAI(base_url=server.url + "/beta", api_key="x", max_retries=0)
    question = {"role": "user", "content": "What is the capital of France?"}
    prefix = "The capital of France is"
    r = beta.chat.completions.create(
        model=MODEL,
        messages=[question, {"role": "assistant", "content": prefix, "prefix": True}],  # type: ignore[list-item, misc]
        stop=["."],
        max_tokens=20,
        temperature=0,
    )
    text = r.choices[0].message.content or ""
    assert text.strip() and not text.startswith(prefix), "the reply continues after the prefix"
    assert "." not in text and r.choices[0].finish_reason == "stop"
    code = beta.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Write a Python function that adds two numbers."},
            {"role": "assistant", "content": "```python\ndef add(a, b):\n    ", "prefix": True},
        ],  # type: ignore[list-item, misc]
        stop=["```"],
        max_tokens=30,
        temperature=0,
    )
    assert "return a + b" in (code.choices[0].message.content or "")


def test_fim_completion(server: Server, models: dict[str, str]) -> None:
    beta = OpenAI(base_url=server.url + "/beta", api_key="x", max_retries=0)
    r = beta.completions.create(
        model=FIM, prompt="def fib(a):", suffix="    return fib(a-1) + fib(a-2)", max_tokens=16
    )
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage and r.usage.completion_tokens <= 16
    with pytest.raises(openai.BadRequestError, match="4096"):
        beta.completions.create(model=FIM, prompt="a", suffix="b", max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="insert"):
        beta.completions.create(model=MODEL, prompt="a", suffix="b", max_tokens=4)
    native = httpx.post(
        server.url + "/api/generate",
        timeout=60,
        json={
            "model": FIM,
            "prompt": "def fib(a):",
            "suffix": "return 1",
            "stream": False,
            "options": {"num_predict": 4},
        },
    )
    assert native.status_code == 200 and native.json()["done"]


def test_balance(server: Server) -> None:
    r = httpx.get(server.url + "/user/balance", timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["is_available"] is True
    (info,) = body["balance_infos"]
    assert info["currency"] in ("CNY", "USD")
    for key in ("total_balance", "granted_balance", "topped_up_balance"):
        assert isinstance(info[key], str) and float(info[key]) >= 0


@pytest.fixture(scope="module")
def aliased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("aliases")
    config = home / "llmux.toml"
    config.write_text(
        '[server]\nbalance_currency = "USD"\nbalance_total = "12.50"\n'
        '[gateway.aliases]\n"deepseek-chat" = "smollm2:135m"\n"deepseek-reasoner" = "library/smollm2:135m"\n'
    )
    srv = start_server(home, args=["--config", str(config)])
    yield srv
    srv.stop()


def test_aliases_come_from_configuration(aliased: Server) -> None:
    ds = OpenAI(base_url=aliased.url, api_key="x", max_retries=0)
    ids = [m.id for m in ds.models.list().data]
    assert {"deepseek-chat", "deepseek-reasoner", MODEL} <= set(ids)
    assert ds.models.retrieve("deepseek-chat").id == "deepseek-chat"
    r = ds.chat.completions.create(model="deepseek-chat", messages=ASK, max_tokens=3)
    assert r.model == "deepseek-chat" and r.choices[0].message.content
    native = httpx.post(
        aliased.url + "/api/chat",
        timeout=60,
        json={
            "model": "deepseek-reasoner",
            "messages": ASK,
            "stream": False,
            "options": {"num_predict": 2},
        },
    )
    assert native.status_code == 200, "one name resolution for /api and /v1 (X67)"
    (info,) = httpx.get(aliased.url + "/user/balance", timeout=10).json()["balance_infos"]
    assert info["currency"] == "USD" and info["total_balance"] == "12.50"


def test_prefix_can_close_the_think_block(server: Server, models: dict[str, str]) -> None:
    beta = OpenAI(base_url=server.url + "/beta", api_key="x", max_retries=0)
    prefix = "<think>\n17 has no divisors but 1 and 17.\n</think>\n\n"
    r = beta.chat.completions.create(
        model=THINKER,
        messages=[*ASK, {"role": "assistant", "content": prefix, "prefix": True}],  # type: ignore[list-item, misc]
        max_tokens=12,
        temperature=0,
    )
    msg = r.choices[0].message.model_dump()
    assert msg["content"] and not msg.get("reasoning_content"), "the reply continues after </think>"
    still = beta.chat.completions.create(
        model=THINKER,
        messages=[*ASK, {"role": "assistant", "content": "Divisors of 17:", "prefix": True}],  # type: ignore[list-item, misc]
        max_tokens=8,
        temperature=0,
    )
    assert still.choices[0].message.model_dump()["reasoning_content"], "inside the open block"
