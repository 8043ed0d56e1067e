"""Ollama's native API over real HTTP against the real bundled model.

Each test names the compatibility checklist item (N1..N29 in
shared/reference/api-compat.md) it covers.
"""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import pytest

import llmux
from tests.conftest import MODEL, Server
from tests.support.models import plain_copy

pytestmark = pytest.mark.model

SHORT = {"temperature": 0, "seed": 7, "num_predict": 24}


def ndjson(response: httpx.Response) -> list[dict]:
    lines = response.text.split("\n")
    assert lines[-1] == "", "NDJSON must end with a newline"
    assert all(line.strip() for line in lines[:-1]), "no blank lines in NDJSON (N29)"
    return [json.loads(line) for line in lines[:-1]]


def assert_final_metrics(obj: dict) -> None:
    assert obj["done"] is True
    assert obj["done_reason"] in ("stop", "length")
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        assert isinstance(obj[key], int), key
    assert obj["prompt_eval_count"] > 0 and obj["eval_duration"] > 0
    assert obj["total_duration"] >= obj["prompt_eval_duration"] + obj["eval_duration"]


# -- N1: liveness and version -------------------------------------------------------------
def test_root_and_version(http: httpx.Client) -> None:
    r = http.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert r.headers["content-type"].startswith("text/plain")
    assert http.head("/").status_code == 200
    shown = http.get("/api/version").json()
    assert shown["version"] == "0.12.6", "the Ollama API version llmux implements (configurable)"
    assert shown["llmux_version"] == llmux.__version__
    assert http.head("/api/version").status_code == 200


# -- N2, N3, N4, N5: chat streaming and non-streaming ----------------------------------------
def test_chat_streams_ndjson_with_metrics(http: httpx.Client) -> None:
    r = http.post(
        "/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello"}],
            "options": SHORT,
        },
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(r)
    assert len(lines) > 2
    assert all(line["done"] is False for line in lines[:-1])
    assert all(line["message"]["role"] == "assistant" for line in lines)
    assert_final_metrics(lines[-1])
    assert lines[-1]["eval_count"] <= 24


def test_stream_equals_non_stream_at_temperature_zero(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name three fruits."}],
        "options": {"temperature": 0, "seed": 42, "num_predict": 40},
    }
    streamed = "".join(
        line["message"]["content"] for line in ndjson(http.post("/api/chat", json=body))
    )
    whole = http.post("/api/chat", json={**body, "stream": False})
    assert whole.headers["content-type"].startswith("application/json")
    data = whole.json()
    assert_final_metrics(data)
    assert data["message"]["content"] == streamed and streamed


def test_same_text_with_and_without_prefix_cache(http: httpx.Client) -> None:
    """A long shared prefix is reused from the cache and must not change greedy output."""
    system = f"[{time.time_ns()}] " + "You are a careful assistant. " * 30  # cached nowhere yet
    body = {
        "model": MODEL,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 30},
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "What is 2+2?"},
        ],
    }
    fresh = http.post("/api/chat", json=body).json()
    cached = http.post("/api/chat", json=body).json()
    assert fresh["prompt_eval_count"] > 192, "the first run evaluates the whole prompt"
    assert cached["prompt_eval_count"] < 64, "the second run reuses every whole chunk"
    assert cached["message"]["content"] == fresh["message"]["content"]


def test_next_question_on_the_same_system_prompt_reuses_it(http: httpx.Client) -> None:
    system = f"[{time.time_ns()}] " + "You are a careful assistant. " * 30
    ask = {"model": MODEL, "stream": False, "options": {"temperature": 0, "num_predict": 5}}

    def chat(question: str) -> dict:  # type: ignore[type-arg]
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return http.post("/api/chat", json={**ask, "messages": messages}).json()  # type: ignore[no-any-return]

    first = chat("Hi")
    second = chat("What is the capital of France?")
    assert first["prompt_eval_count"] > 192
    assert second["prompt_eval_count"] < first["prompt_eval_count"] - 100


# -- N6, N7: generate ----------------------------------------------------------------------
def test_generate_streams_response_and_context(http: httpx.Client) -> None:
    lines = ndjson(
        http.post(
            "/api/generate",
            json={"model": MODEL, "prompt": "Why is the sky blue?", "options": SHORT},
        )
    )
    assert "".join(line["response"] for line in lines[:-1])
    final = lines[-1]
    assert_final_metrics(final)
    assert final["response"] == ""
    assert isinstance(final["context"], list) and all(isinstance(t, int) for t in final["context"])


def test_generate_acceptance_curl_example(http: httpx.Client) -> None:
    """The README's curl line: options.max_tokens is an alias of num_predict."""
    r = http.post(
        "/api/generate",
        json={
            "model": "smollm2:135m",
            "prompt": "Why is the sky blue?",
            "stream": False,
            "options": {"temperature": 0.7, "max_tokens": 20},
        },
    )
    data = r.json()
    assert r.status_code == 200 and data["response"]
    assert_final_metrics(data)
    assert data["eval_count"] <= 20


def test_generate_raw_has_no_context_and_rejects_system(http: httpx.Client) -> None:
    data = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Once upon a time",
            "raw": True,
            "stream": False,
            "options": SHORT,
        },
    ).json()
    assert data["response"] and "context" not in data
    r = http.post(
        "/api/generate", json={"model": MODEL, "prompt": "x", "raw": True, "system": "be brief"}
    )
    assert r.status_code == 400 and "raw" in r.json()["error"]


def test_generate_context_continues_conversation(http: httpx.Client) -> None:
    first = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "My name is Ada.", "stream": False, "options": SHORT},
    ).json()
    second = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "What is my name?",
            "context": first["context"],
            "stream": False,
            "options": SHORT,
        },
    ).json()
    assert (
        second["prompt_eval_count"] + len(first["context"])
        >= len(second["context"]) - second["eval_count"]
    )
    assert len(second["context"]) > len(first["context"])


def test_generate_bad_context_tokens_are_400(http: httpx.Client) -> None:
    for context in ([99_999_999], [-5]):
        r = http.post(
            "/api/generate",
            json={"model": MODEL, "prompt": "hi", "context": context, "stream": False},
        )
        assert r.status_code == 400 and "vocabulary" in r.json()["error"]


def test_generate_go_template_override(http: httpx.Client) -> None:
    data = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Hi",
            "system": "S",
            "stream": False,
            "options": {**SHORT, "num_predict": 1},
            "template": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n",
        },
    ).json()
    assert data["done"] is True and data["eval_count"] == 1
    bad = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "Hi", "template": "{{ .Prompt | upper }}"},
    )
    assert bad.status_code == 400


def test_generate_template_over_budget_is_400_and_the_server_stays_responsive(
    http: httpx.Client,
) -> None:
    nested = "{{ range $.Prompt }}" * 5 + "x" + "{{ end }}" * 5
    for template in (nested, "{{ range 100000000 }}x{{ end }}", "{{ range 5 }}x"):
        r = http.post(
            "/api/generate",
            json={"model": MODEL, "prompt": "p" * 30, "template": template, "stream": False},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("template: ")
    ok = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Hi",
            "template": "{{ range 3 }}{{ $.Prompt }} {{ end }}",
            "stream": False,
            "options": {**SHORT, "num_predict": 1},
        },
    )
    assert ok.status_code == 200 and ok.json()["prompt_eval_count"] > 3
    started = time.monotonic()
    assert http.get("/api/version").status_code == 200
    assert time.monotonic() - started < 1


# -- N8, N9: load, unload, keep_alive, /api/ps -----------------------------------------------
def test_keep_alive_out_of_range_never_breaks_ps(http: httpx.Client) -> None:
    for raw in ("NaN", "Infinity", '"3000000h"'):
        r = http.post(
            "/api/generate",
            content=f'{{"model": "{MODEL}", "keep_alive": {raw}}}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
    loaded = http.post("/api/generate", json={"model": MODEL, "keep_alive": 1e12})
    assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load"
    ps = http.get("/api/ps")
    assert ps.status_code == 200, ps.text
    entry = next(m for m in ps.json()["models"] if m["name"] == MODEL)
    assert entry["expires_at"].startswith("2318-")  # forever, as Ollama shows it
    http.post("/api/generate", json={"model": MODEL, "keep_alive": "30m"})
    assert http.get("/api/ps").status_code == 200


def test_load_unload_and_ps(http: httpx.Client) -> None:
    loaded = http.post("/api/generate", json={"model": MODEL, "keep_alive": "10m"}).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"
    ps = http.get("/api/ps").json()["models"]
    entry = next(m for m in ps if m["name"] == MODEL)
    assert entry["context_length"] > 0 and entry["size"] > 0 and len(entry["digest"]) == 64
    unloaded = http.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload" and unloaded["message"]["content"] == ""
    assert all(m["name"] != MODEL for m in http.get("/api/ps").json()["models"])
    again = http.post("/api/chat", json={"model": MODEL, "messages": []}).json()
    assert again["done_reason"] == "load" and again["load_duration"] > 0


@pytest.mark.parametrize("keep_alive", ["10m", 3600, "1h30m", -1, "-1m"])
def test_keep_alive_values_move_expiry(http: httpx.Client, keep_alive: object) -> None:
    http.post("/api/generate", json={"model": MODEL, "keep_alive": keep_alive})
    entry = next(m for m in http.get("/api/ps").json()["models"] if m["name"] == MODEL)
    year = int(entry["expires_at"][:4])
    if (isinstance(keep_alive, int) and keep_alive < 0) or str(keep_alive).startswith("-"):
        assert year > 2100
    else:
        assert year < 2100


def test_keep_alive_zero_after_reply_unloads(http: httpx.Client) -> None:
    http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Hi",
            "keep_alive": 0,
            "stream": False,
            "options": {"num_predict": 2},
        },
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        m["name"] == MODEL for m in http.get("/api/ps").json()["models"]
    ):
        time.sleep(0.1)
    assert all(m["name"] != MODEL for m in http.get("/api/ps").json()["models"])


def test_keep_alive_numeric_string_is_400(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": MODEL, "keep_alive": "3600"})
    assert r.status_code == 400 and "duration" in r.json()["error"]


# -- N10: format -----------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["List three colors as JSON.", "Tell me a joke", "hi"])
def test_format_json_always_parses(http: httpx.Client, prompt: str) -> None:
    data = http.post(
        "/api/chat",
        json={
            "model": MODEL,
            "format": "json",
            "stream": False,
            "options": {"temperature": 0, "num_predict": 60},
            "messages": [{"role": "user", "content": prompt}],
        },
    ).json()
    assert isinstance(json.loads(data["message"]["content"]), dict)


def test_format_schema_output_validates(http: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    for seed in (1, 2, 3):
        r = http.post(
            "/api/generate",
            json={
                "model": MODEL,
                "prompt": "Describe a person as JSON.",
                "format": schema,
                "stream": False,
                "options": {"temperature": 0.8, "seed": seed, "num_predict": 200},
            },
        )
        jsonschema.validate(json.loads(r.json()["response"]), schema)


def test_format_bad_values_are_400(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "x", "format": "yaml"})
    assert r.status_code == 400 and "format" in r.json()["error"]


# -- N11, N12: options -------------------------------------------------------------------------
def test_num_predict_and_stop(http: httpx.Client) -> None:
    data = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Count: 1, 2, 3,",
            "raw": True,
            "stream": False,
            "options": {"num_predict": 5, "temperature": 0},
        },
    ).json()
    assert data["eval_count"] <= 5 and data["done_reason"] == "length"
    data = http.post(
        "/api/chat",
        json={
            "model": MODEL,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 80, "stop": ["\n"]},
            "messages": [{"role": "user", "content": "Write a poem of four lines."}],
        },
    ).json()
    assert "\n" not in data["message"]["content"] and data["done_reason"] == "stop"


def test_unknown_options_ignored_wrong_types_400(http: httpx.Client) -> None:
    ok = http.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Hi",
            "stream": False,
            "options": {"num_predict": 2, "not_an_option": 1, "penalize_newline": True},
        },
    )
    assert ok.status_code == 200
    for options in (
        {"temperature": "hot"},
        {"num_predict": 2.5},
        {"top_k": True},
        {"stop": 3},
        {"num_ctx": 0},
    ):
        r = http.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "options": options})
        assert r.status_code == 400, options
        assert "option" in r.json()["error"]


def test_all_documented_options_accepted(http: httpx.Client) -> None:
    options = {
        "num_predict": 3,
        "temperature": 0.5,
        "top_k": 20,
        "top_p": 0.8,
        "min_p": 0.05,
        "typical_p": 0.9,
        "seed": 3,
        "stop": ["###"],
        "repeat_penalty": 1.2,
        "repeat_last_n": 32,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "num_ctx": 2048,
        "num_thread": 2,
        "num_gpu": 0,
    }
    r = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "Hello", "stream": False, "options": options},
    )
    assert r.status_code == 200 and r.json()["eval_count"] <= 3
    entry = next(m for m in http.get("/api/ps").json()["models"] if m["name"] == MODEL)
    assert entry["context_length"] == 2048


def test_seeded_sampling_is_reproducible(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "prompt": "Write a story about a cat.",
        "stream": False,
        "options": {"temperature": 1.0, "seed": 1234, "num_predict": 30},
    }
    a, b = (http.post("/api/generate", json=body).json()["response"] for _ in range(2))
    assert a == b


# -- N13, N14, N15: capabilities ---------------------------------------------------------------
def test_capability_errors(http: httpx.Client, server: Server) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    plain = plain_copy(server.home)  # the GGUF's own template, which has no tools
    r = http.post(
        "/api/chat",
        json={"model": plain, "messages": [{"role": "user", "content": "x"}], "tools": tools},
    )
    assert r.status_code == 400 and "does not support tools" in r.json()["error"]
    r = http.post(
        "/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "think": True},
    )
    assert r.status_code == 400 and "does not support thinking" in r.json()["error"]
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "def f(", "suffix": "return 1"})
    assert r.status_code == 400 and "does not support insert" in r.json()["error"]
    r = http.post(
        "/api/generate", json={"model": MODEL, "prompt": "what is this", "images": ["aGVsbG8="]}
    )
    assert r.status_code == 400 and "does not support vision" in r.json()["error"]
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "x", "images": ["not base64!!"]})
    assert r.status_code == 400 and "base64" in r.json()["error"]


def test_tool_history_accepted(http: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "22C and sunny", "tool_name": "weather"},
        {"role": "ASSISTANT", "content": "It is 22C."},
        {"role": "user", "content": "Thanks"},
    ]
    r = http.post(
        "/api/chat", json={"model": MODEL, "messages": messages, "stream": False, "options": SHORT}
    )
    assert r.status_code == 200 and r.json()["done"] is True
    r = http.post(
        "/api/chat", json={"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}
    )
    assert r.status_code == 400 and "role" in r.json()["error"]


# -- N16, N17: errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/chat", {"model": "nope:1b", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/generate", {"model": "nope:1b", "prompt": "x"}),
        ("/api/embed", {"model": "nope:1b", "input": "x"}),
        ("/api/show", {"model": "nope:1b"}),
    ],
)
def test_unknown_model_is_404(http: httpx.Client, path: str, body: dict) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 404
    assert r.json()["error"].startswith("model 'nope:1b' not found")


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[1,2]", b'{"model": 5}', b'{"model": "smollm2:135m", "messages": "hi"}'],
)
def test_malformed_bodies_are_400(http: httpx.Client, content: bytes) -> None:
    r = http.post("/api/chat", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)


def test_missing_model_and_bad_names(http: httpx.Client) -> None:
    assert http.post("/api/chat", json={"messages": []}).json()["error"] == "model is required"
    r = http.post("/api/generate", json={"model": "a/b/c/d", "prompt": "x"})
    assert r.status_code == 400 and "invalid" in r.json()["error"]


def test_wrong_method_and_unknown_route(http: httpx.Client) -> None:
    r = http.get("/api/chat")
    assert r.status_code == 405 and "error" in r.json()
    r = http.get("/api/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_body_too_large_is_413(http: httpx.Client) -> None:
    big = b'{"model":"x","prompt":"' + b"a" * (33 * 1024 * 1024) + b'"}'
    r = http.post("/api/generate", content=big)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_body_too_large_without_length_is_413(http: httpx.Client) -> None:
    def chunks():  # chunked transfer: no Content-Length to check up front
        yield b'{"model":"x","prompt":"'
        for _ in range(40):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    r = http.post("/api/generate", content=chunks())
    assert r.status_code == 413


# -- N19: embeddings -----------------------------------------------------------------------------
def test_embed_single_batch_and_dimensions(http: httpx.Client) -> None:
    one = http.post("/api/embed", json={"model": MODEL, "input": "hello world"}).json()
    assert len(one["embeddings"]) == 1 and one["prompt_eval_count"] > 0
    vec = one["embeddings"][0]
    assert abs(sum(x * x for x in vec) - 1.0) < 1e-3, "embeddings are L2-normalised"
    many = http.post("/api/embed", json={"model": MODEL, "input": ["a", "b c", "d e f"]}).json()[
        "embeddings"
    ]
    assert len(many) == 3 and len({len(v) for v in many}) == 1 and len(many[0]) == len(vec)
    small = http.post(
        "/api/embed", json={"model": MODEL, "input": "hello world", "dimensions": 8}
    ).json()["embeddings"][0]
    assert len(small) == 8
    assert http.post("/api/embed", json={"model": MODEL, "input": []}).json()["embeddings"] == []
    assert http.post("/api/embed", json={"model": MODEL, "input": 5}).status_code == 400
    assert (
        http.post(
            "/api/embed", json={"model": MODEL, "input": "x", "dimensions": 100000}
        ).status_code
        == 400
    )


def test_embed_truncate_false_rejects_long_input(http: httpx.Client) -> None:
    long = "word " * 400  # over a 256-token context (a 4096-token one takes a minute on CPU)
    small = {"model": MODEL, "input": long, "options": {"num_ctx": 256}}
    assert http.post("/api/embed", json=small).status_code == 200
    r = http.post("/api/embed", json={**small, "truncate": False})
    assert r.status_code == 400 and "context length" in r.json()["error"]


def test_legacy_embeddings(http: httpx.Client) -> None:
    vec = http.post("/api/embeddings", json={"model": MODEL, "prompt": "hello world"}).json()[
        "embedding"
    ]
    assert len(vec) > 100 and abs(sum(x * x for x in vec) - 1.0) > 1e-3, (
        "legacy endpoint is not normalised"
    )
    assert http.post("/api/embeddings", json={"model": MODEL, "prompt": ""}).json() == {
        "embedding": []
    }


# -- N20, N21: tags and show -----------------------------------------------------------------------
def test_tags_shape(http: httpx.Client) -> None:
    models = http.get("/api/tags").json()["models"]
    entry = next(m for m in models if m["name"] == MODEL)
    assert entry["model"] == MODEL and entry["size"] > 90_000_000
    assert len(entry["digest"]) == 64 and int(entry["digest"], 16) >= 0
    assert entry["modified_at"].endswith("Z")
    d = entry["details"]
    assert d["format"] == "gguf" and d["family"] == "llama" and d["families"] == ["llama"]
    assert d["parameter_size"] == "134.52M" and d["quantization_level"] == "Q4_1"


def test_show_shape(http: httpx.Client) -> None:
    data = http.post("/api/show", json={"model": MODEL}).json()
    assert data["model_info"]["general.architecture"] == "llama"
    assert data["model_info"]["tokenizer.ggml.tokens"] == []
    assert data["capabilities"] == ["completion", "tools"]  # the bundled template layer
    assert "<|im_start|>" in data["template"]
    assert data["modelfile"].startswith("# Modelfile generated") and "FROM " in data["modelfile"]
    assert data["details"]["context_length"] == 8192
    assert isinstance(data["parameters"], str)
    verbose = http.post("/api/show", json={"name": MODEL, "verbose": True}).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152


# -- N22, N27: copy, delete, names ------------------------------------------------------------------
def test_copy_then_delete_keeps_shared_blobs(http: httpx.Client, server) -> None:  # type: ignore[no-untyped-def]
    blob_dir = server.home / "models" / "blobs"
    before = set(blob_dir.iterdir())
    assert (
        http.post("/api/copy", json={"source": MODEL, "destination": "mycopy"}).status_code == 200
    )
    names = [m["name"] for m in http.get("/api/tags").json()["models"]]
    assert "mycopy:latest" in names
    r = http.post(
        "/api/chat",
        json={
            "model": "mycopy",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "options": SHORT,
        },
    )
    assert r.status_code == 200
    assert http.request("DELETE", "/api/delete", json={"model": "mycopy"}).status_code == 200
    assert http.request("DELETE", "/api/delete", json={"model": "mycopy"}).status_code == 404
    assert http.post("/api/show", json={"model": MODEL}).status_code == 200, (
        "the shared blob survived"
    )
    assert set(blob_dir.iterdir()) == before, "nothing orphaned, nothing shared lost"
    assert http.post("/api/copy", json={"source": "missing", "destination": "x"}).status_code == 404
    assert http.post("/api/copy", json={"source": MODEL}).status_code == 400


def test_name_forms_resolve_to_one_model(http: httpx.Client) -> None:
    http.post("/api/copy", json={"source": MODEL, "destination": "namecheck"})
    try:
        for name in (
            "namecheck",
            "namecheck:latest",
            "library/namecheck",
            "registry.ollama.ai/library/namecheck:latest",
            "NameCheck",
        ):
            r = http.post("/api/show", json={"model": name})
            assert r.status_code == 200, name
    finally:
        http.request("DELETE", "/api/delete", json={"model": "namecheck"})


# -- N28: host and origin checks ------------------------------------------------------------------
def test_foreign_host_header_is_403(http: httpx.Client) -> None:
    r = http.get("/api/tags", headers={"Host": "evil.example.com"})
    assert r.status_code == 403 and r.content == b""
    assert http.get("/api/tags", headers={"Host": "localhost:11434"}).status_code == 200


def test_origins(http: httpx.Client) -> None:
    r = http.get("/api/tags", headers={"Origin": "https://evil.example.com"})
    assert r.status_code == 403 and "LLMUX_SERVER__ORIGINS" in r.json()["error"]
    r = http.get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert (
        r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    )
    pre = http.options(
        "/api/chat",
        headers={
            "Origin": "http://127.0.0.1:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os",
        },
    )
    assert pre.status_code == 200
    assert "x-stainless-os" in pre.headers["access-control-allow-headers"].lower()


# -- N18, X66: a client that leaves mid-stream frees the model --------------------------------------
def test_disconnect_mid_stream_stops_generation(server, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    body = {
        "model": MODEL,
        "prompt": "Write a very long story about dragons.",
        "options": {"num_predict": 3000, "temperature": 1},
    }
    with (
        httpx.Client(base_url=server.url, timeout=60) as c,
        c.stream("POST", "/api/generate", json=body) as r,
    ):
        for _ in zip(range(3), r.iter_lines(), strict=False):
            pass
    quick = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert quick.status_code == 200
    cancelled = [
        line for line in server.log.read_text().splitlines() if "generation cancelled after" in line
    ]
    assert cancelled, "the abandoned generation was not cancelled"
    assert int(cancelled[-1].split("after ")[1].split()[0]) < 3000


def test_native_logprobs(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "logprobs": True,
        "top_logprobs": 3,
        "options": {"num_predict": 4},
    }
    r = http.post("/api/chat", json=body).json()
    lps = r["logprobs"]
    assert (
        len(lps) == r["eval_count"]
        and "".join(lp["token"] for lp in lps) == r["message"]["content"]
    )
    assert all(len(lp["top_logprobs"]) == 3 and lp["logprob"] <= 0 for lp in lps)
    lines = [
        json.loads(x)
        for x in http.post(
            "/api/generate", json={**body, "prompt": "Hi", "stream": True}
        ).text.splitlines()
    ]
    streamed = [lp for line in lines for lp in line.get("logprobs", [])]
    assert len(streamed) == lines[-1]["eval_count"]
    plain = http.post("/api/chat", json={**body, "logprobs": False}).json()
    assert "logprobs" not in plain
