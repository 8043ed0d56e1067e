"""The bundled model is registered with a tool-capable template layer and an 8K
context (issue 21 item 3): Ollama clients that send tools (LangChain's
``ChatOllama.bind_tools``, LiteLLM's ``ollama_chat/``, Open WebUI's native function
calling) are served instead of refused."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama

from llmux.core.names import ModelName
from llmux.models.bundled import bundled_gguf, ensure_bundled
from llmux.models.store import ModelStore
from tests.conftest import MODEL, Server


def weather_tool(i: int = 0) -> dict[str, object]:
    return {
        "type": "function",
        "function": {
            "name": f"get_weather_{i}",
            "description": "Current weather for a city, with temperature, wind and sky.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }


def test_show_lists_tools_a_go_template_and_the_8k_context(http: httpx.Client) -> None:
    shown = http.post("/api/show", json={"model": MODEL}).json()
    assert "tools" in shown["capabilities"] and "completion" in shown["capabilities"]
    assert "{{ range .Tools }}" in shown["template"].replace("{{-", "{{")
    assert "num_ctx" in shown["parameters"] and "8192" in shown["parameters"]


def test_ollama_clients_can_send_tools_to_the_bundled_model(server: Server) -> None:
    client = ollama.Client(host=server.url)
    reply = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[weather_tool()],
        options={"num_predict": 40, "temperature": 0},
    )
    assert reply.done and reply.message.role == "assistant"
    for call in reply.message.tool_calls or []:  # a call, if the model made one, is well-formed
        assert call.function.name == "get_weather_0" and isinstance(call.function.arguments, dict)
    # the history with a tool call and its result renders and is served
    again = client.chat(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather_0", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": '{"sky": "sunny"}', "tool_name": "get_weather_0"},
        ],
        tools=[weather_tool()],
        options={"num_predict": 8},
    )
    assert again.done


def test_a_long_tool_list_fits_the_context(server: Server) -> None:
    """36 tools (what Open WebUI sends by default) are a ~6,600-token prompt: it fits
    the bundled model's 8K context, so nothing is cut from the front."""
    before = server.log.read_text().count("truncated to the last")
    with httpx.Client(base_url=server.url, timeout=300) as http:
        r = http.post(
            "/api/chat",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [weather_tool(i) for i in range(36)],
                "stream": False,
                "options": {"num_predict": 4},
            },
        )
    assert r.status_code == 200, r.text
    assert server.log.read_text().count("truncated to the last") == before


def test_an_older_registration_gets_the_template_at_start(tmp_path: Path) -> None:
    source = bundled_gguf()
    assert source is not None
    store = ModelStore(tmp_path)
    name = ModelName.parse(MODEL)
    store.import_gguf(name, source)  # as llmux registered it before
    assert "template" not in store.resolve(name).layers
    ensure_bundled(store, MODEL)
    record = store.resolve(name)
    assert "{{ .Tools }}" not in record.layers["template"] and ".Tools" in record.layers["template"]
    assert json.loads(record.layers["params"]) == {"num_ctx": 8192}


def test_a_gguf_with_only_jinja_shows_the_equivalent_go_template(
    server: Server, http: httpx.Client, tmp_path: Path
) -> None:
    """Issue 21 item 5: a model without a template layer shows the Go template of its
    recognised chat format and the format's stops, as Ollama does; its prompts still
    render from the Jinja template, and a model made from its Modelfile prompts the
    same."""
    from tests.support.models import plain_copy

    plain = plain_copy(server.home, "jinja-only:latest")
    shown = http.post("/api/show", json={"model": plain}).json()
    assert "{{ if .Messages }}" in shown["template"] and "{%" not in shown["template"]
    assert "You are a helpful AI assistant named SmolLM" in shown["template"]
    assert 'stop                           "<|im_start|>"' in shown["parameters"]
    assert 'stop                           "<|im_end|>"' in shown["parameters"]
    assert "tools" not in shown["capabilities"]  # the Jinja template takes none
    assert 'TEMPLATE """{{ if .Messages }}' in shown["modelfile"]
    chat = {"messages": [{"role": "user", "content": "Name a colour."}], "stream": False,
            "options": {"temperature": 0, "seed": 3, "num_predict": 12}}  # fmt: skip
    first = http.post("/api/chat", json={**chat, "model": plain}).json()
    # the shown template, made into a model of its own, renders the very same prompt
    r = http.post("/api/create", json={"model": "go-twin:latest", "from": plain,
                                       "template": shown["template"], "stream": False})  # fmt: skip
    assert r.status_code == 200, r.text
    twin = http.post("/api/chat", json={**chat, "model": "go-twin:latest"}).json()
    assert twin["prompt_eval_count"] == first["prompt_eval_count"]
    assert twin["message"]["content"] == first["message"]["content"]
