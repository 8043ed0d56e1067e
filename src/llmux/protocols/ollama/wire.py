"""Ollama's request bodies, as pydantic models.

Lenient in: unknown top-level fields are accepted and reported by
:func:`ignored_fields` so the route can log them, as Ollama ignores them too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

KeepAlive = str | int | float | None


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def ignored_fields(obj: BaseModel) -> list[str]:
    return sorted((obj.model_extra or {}).keys())


class WireToolFunction(Wire):
    name: str = ""
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    index: int | None = None


class WireToolCall(Wire):
    id: str | None = None
    type: str | None = None
    function: WireToolFunction


class WireMessage(Wire):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class WireToolSpec(Wire):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class WireTool(Wire):
    type: str = "function"
    function: WireToolSpec


class GenerateBody(Wire):
    model: str = ""
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool = True
    raw: bool = False
    format: str | dict[str, Any] | None = None
    images: list[str] | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class ChatBody(Wire):
    model: str = ""
    messages: list[WireMessage] = Field(default_factory=list)
    tools: list[WireTool] | None = None
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class EmbedBody(Wire):
    model: str = ""
    input: Any = None
    truncate: bool = True
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbeddingsBody(Wire):
    model: str = ""
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class ModelBody(Wire):
    """``/api/show`` and ``/api/delete``: ``model`` (older clients send ``name``)."""

    model: str = ""
    name: str = ""
    verbose: bool = False

    @property
    def target(self) -> str:
        return self.model or self.name


class CopyBody(Wire):
    source: str = ""
    destination: str = ""
