"""The normalised request every protocol adapter converts into.

Values are frozen dataclasses; ``None`` in :class:`Sampling` means "use the model's
own default" (never a forced value), which is what lets the OpenAI layer honour a
model's parameters where Ollama's forces 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str = ""
    thinking: str = ""
    images: tuple[bytes, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: name, description and a JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


SamplingDefaults = Literal["ollama", "neutral"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Per-request sampling; ``None`` means the model's default.

    ``defaults`` names what an option neither the request nor the model's parameters
    set falls back to: ``"ollama"`` (Ollama's ``DefaultOptions``, the native API) or
    ``"neutral"`` (the distribution as the model gives it: temperature 1, no top-k or
    top-p cut, no penalties; the OpenAI and DeepSeek APIs)."""

    num_predict: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_keep: int | None = None
    defaults: SamplingDefaults = "ollama"


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Options that shape the loaded model; a change reloads it."""

    num_ctx: int | None = None
    num_thread: int | None = None
    num_gpu: int | None = None


# ``format``: None (free text), "json" (any JSON value as an object), or a JSON Schema.
OutputFormat = None | str | dict[str, Any]

# ``tool_choice``: None keeps Ollama's rule (tools need a tool-capable template);
# "auto", "required", "none" or a function name use llmux's tool support on any model.
ToolChoice = None | str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One generation request.

    Either ``messages`` are rendered through a chat template, or ``prompt`` is used as
    raw text (``raw`` generate, completions, FIM with ``suffix``). ``context`` holds
    tokens to evaluate before the prompt (Ollama's deprecated generate context).
    """

    model: str
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: tuple[int, ...] = ()
    return_context: bool = False
    tools: tuple[Tool, ...] = ()
    format: OutputFormat = None
    sampling: Sampling = field(default_factory=Sampling)
    load: LoadOptions = field(default_factory=LoadOptions)
    keep_alive: float | None = None
    think: bool | str | None = None
    images: tuple[bytes, ...] = ()
    tool_choice: ToolChoice = None
    n: int = 1
    logit_bias: tuple[tuple[int, float], ...] = ()
    top_logprobs: int | None = None  # None: no logprobs
    prefix: str | None = None  # continue this assistant text (DeepSeek prefix completion)

    @property
    def thinking_off(self) -> bool:
        return self.think is False or self.think == "none"

    @property
    def all_images(self) -> tuple[bytes, ...]:
        found = list(self.images)
        for m in self.messages:
            found.extend(m.images)
        return tuple(found)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    inputs: tuple[str, ...]
    normalize: bool = True
    truncate: bool = True
    dimensions: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    keep_alive: float | None = None
