"""Prompts render from the template capabilities are read from: a template layer (a Go
template, as ``/api/create`` stores it) over the GGUF's own, unless llmux can't run it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llmux.config import EngineSettings
from llmux.core.names import ModelName
from llmux.core.request import ChatRequest, Message, Tool
from llmux.engine.engine import LocalEngine
from llmux.engine.prompt import PromptBuilder
from llmux.models.store import ModelRecord

GGUF_JINJA = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n"
)
GO_THINKING_TOOLS = (
    "{{ if .Tools }}<tools>{{ range .Tools }}{{ .Function }}{{ end }}</tools>{{ end }}"
    "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}<|assistant|>"
    "{{ if .Think }}<think>{{ end }}"
)


class FakeStore:
    def gguf(self, record: ModelRecord) -> Any:
        return SimpleNamespace(
            chat_template=GGUF_JINJA,
            token_text=lambda key: "",
            has_fim_tokens=False,
            architecture="llama",
            get=lambda key: None,
        )


def record(template: str) -> ModelRecord:
    return ModelRecord(
        name=ModelName.parse("made:latest"),
        manifest={},
        digest="sha256:" + "0" * 64,
        modified_at=datetime.now(UTC),
        config={},
        model_path=Path("/nonexistent"),
        size=0,
        layers={"template": template},
    )


def chat(**kw: Any) -> ChatRequest:
    return ChatRequest(model="made", messages=(Message(role="user", content="Hi"),), **kw)


def test_a_template_layer_is_what_prompts_render_from() -> None:
    store: Any = FakeStore()
    rec = record(GO_THINKING_TOOLS)
    caps = LocalEngine(store, EngineSettings()).capabilities(rec)
    assert "thinking" in caps and "tools" in caps
    tool = Tool("weather", "Get the weather", {"type": "object", "properties": {}})
    prompt = PromptBuilder(store).build(rec, chat(think=True, tools=(tool,)))
    assert prompt.text.startswith('<tools>{"name": "weather"'), prompt.text
    assert "<|user|>Hi<|assistant|><think>" in prompt.text and "<|im_start|>" not in prompt.text
    assert prompt.reasoning and prompt.thinking_first, "think: true is honoured"
    off = PromptBuilder(store).build(rec, chat(think=False))
    assert not off.text.endswith("<think>")


def test_a_layer_llmux_cannot_run_gives_way_to_the_gguf_template_for_both() -> None:
    store: Any = FakeStore()
    rec = record("{{ json .Messages }}<think>")  # json: not in llmux's Go subset
    caps = LocalEngine(store, EngineSettings()).capabilities(rec)
    assert "thinking" not in caps, "capabilities come from the template that renders"
    prompt = PromptBuilder(store).build(rec, chat())
    assert prompt.text.startswith("<|im_start|>user\nHi") and not prompt.reasoning
