"""OpenAI (and DeepSeek) request bodies, as pydantic models.

Lenient in, as the real API: unknown fields are accepted and logged by the route.
DeepSeek extras (``thinking``, ``prefix`` on messages, ``reasoning_content`` in
history) and llmux's ``options`` (Ollama's native options) are fields here too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # integers the real APIs accept (Go, C)


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ImageURL(Wire):
    url: str
    detail: str | None = None


class ContentPart(Wire):
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None


class FunctionCall(Wire):
    name: str = ""
    arguments: str | dict[str, Any] = ""


class ToolCallWire(Wire):
    id: str | None = None
    type: str = "function"
    function: FunctionCall


class ChatMessage(Wire):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallWire] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # DeepSeek history
    reasoning: str | None = None  # Ollama's /v1 spelling
    prefix: bool = False  # DeepSeek chat prefix completion


class FunctionSpec(Wire):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool | None = None


class ToolSpec(Wire):
    type: str = "function"
    function: FunctionSpec


class NamedToolChoice(Wire):
    type: str = "function"
    function: dict[str, Any]


class JSONSchemaFormat(Wire):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(Wire):
    include_usage: bool = False


class Thinking(Wire):
    type: Literal["enabled", "disabled"] = "enabled"


class ChatCompletionBody(Wire):
    model: str = ""
    messages: list[ChatMessage] = Field(default_factory=list)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=0, le=INT64_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=0, le=INT64_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    thinking: Thinking | None = None
    options: dict[str, Any] | None = None  # llmux extension: Ollama's native options
    keep_alive: str | int | float | None = None  # llmux extension
    context_window: int | None = Field(default=None, ge=1)  # DeepSeek-style tutorials: num_ctx


class CompletionBody(Wire):
    model: str = ""
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    suffix: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=16, ge=0, le=INT64_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    best_of: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None
    context_window: int | None = Field(default=None, ge=1)


class EmbeddingBody(Wire):
    model: str = ""
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


MAX_MODERATION_INPUTS = 2048


class ModerationBody(Wire):
    """``POST /v1/moderations``: one text, several (a result each), or one input of
    content parts (one result; image parts are not checked)."""

    input: str | list[str] | list[ContentPart]
    model: str | None = None

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_MODERATION_INPUTS:
            raise ValueError(f"`input` takes 1 to {MAX_MODERATION_INPUTS} items")
        return value


class BatchBody(Wire):
    """``POST /v1/batches``."""

    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
