"""OpenAI / DeepSeek wire bodies -> core requests. Pure functions, no I/O.

Differences from Ollama's /v1 layer, on purpose: absent ``temperature``/``top_p`` mean
the model's own defaults (never a forced 1.0); ``n``, ``logit_bias``, ``tool_choice``,
``max_completion_tokens`` and Ollama's native ``options`` (e.g. ``num_ctx``) are honoured.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from llmux.core.durations import parse_keep_alive
from llmux.core.request import (
    ChatRequest,
    EmbedRequest,
    LoadOptions,
    Message,
    Role,
    Sampling,
    Tool,
    ToolCall,
)
from llmux.errors import InvalidRequest
from llmux.protocols.ollama.convert import decode_image, parse_options
from llmux.protocols.openai.wire import (
    ChatCompletionBody,
    ChatMessage,
    CompletionBody,
    EmbeddingBody,
)

ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
EFFORT_OFF = {"none"}


def _require_model(model: str) -> str:
    if not model.strip():
        raise InvalidRequest("you must provide a model parameter", param="model")
    return model


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > 16:
        raise InvalidRequest("stop: at most 16 sequences", param="stop")
    return stops


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    out = []
    for key, value in (bias or {}).items():
        try:
            token = int(key) if len(key) < 12 else -1  # no token id has 12 digits
        except ValueError:
            token = -1
        if not 0 <= token < 2**31:
            raise InvalidRequest(
                f"logit_bias keys must be token ids, got {key[:20]!r}", param="logit_bias"
            )
        out.append((token, max(-100.0, min(100.0, float(value)))))
    return tuple(out)


def _content(m: ChatMessage, i: int) -> tuple[str, tuple[bytes, ...]]:
    if m.content is None or isinstance(m.content, str):
        return m.content or "", ()
    texts: list[str] = []
    images: list[bytes] = []
    for part in m.content:
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            url = (
                part.image_url
                if isinstance(part.image_url, str)
                else (part.image_url.url if part.image_url else "")
            )
            if not url.startswith("data:"):
                raise InvalidRequest(
                    f"messages[{i}]: image_url must be a base64 data URI (data:image/png;base64,...); "
                    "llmux does not fetch image URLs",
                    param=f"messages[{i}].content",
                )
            images.append(decode_image(url, f"messages[{i}].content"))
        else:
            raise InvalidRequest(
                f"messages[{i}]: unsupported content part type {part.type!r}",
                param=f"messages[{i}].content",
            )
    return "".join(texts), tuple(images)


def _tool_calls(m: ChatMessage, i: int) -> tuple[ToolCall, ...]:
    calls = []
    for j, c in enumerate(m.tool_calls or []):
        args: Any = c.function.arguments
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise InvalidRequest(
                    f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON",
                    param="messages",
                ) from None
        calls.append(
            ToolCall(
                name=c.function.name,
                arguments=args if isinstance(args, dict) else {"value": args},
                id=c.id or "",
                index=j,
            )
        )
    return tuple(calls)


def to_messages(wire: list[ChatMessage]) -> tuple[tuple[Message, ...], str | None]:
    """Core messages, and the text of a trailing ``prefix: true`` assistant message."""
    if not wire:
        raise InvalidRequest(
            "messages: [] is too short - 'messages' needs at least one message", param="messages"
        )
    prefix = None
    if wire[-1].role == "assistant" and wire[-1].prefix:
        prefix = (
            wire[-1].content
            if isinstance(wire[-1].content, str)
            else _content(wire[-1], len(wire) - 1)[0]
        )
        wire = wire[:-1]
    names = {c.id: c.function.name for m in wire for c in (m.tool_calls or []) if c.id}
    out = []
    for i, m in enumerate(wire):
        role = ROLES.get(m.role)
        if role is None:
            raise InvalidRequest(
                f"messages[{i}].role: unknown role {m.role!r}", param=f"messages[{i}].role"
            )
        text, images = _content(m, i)
        out.append(
            Message(
                role=role,
                content=text,
                images=images,
                tool_calls=_tool_calls(m, i),
                tool_call_id=m.tool_call_id,
                tool_name=m.name or (names.get(m.tool_call_id) if m.tool_call_id else None),
                # reasoning_content in history is accepted but not fed back as content
                thinking=m.reasoning_content or m.reasoning or "",
            )
        )
    return tuple(out), prefix


def _think(body: ChatCompletionBody) -> bool | str | None:
    if body.thinking is not None:
        return body.thinking.type == "enabled"
    if body.reasoning_effort in EFFORT_OFF:
        return False
    # any other effort is a hint: models that think do by default, others ignore it
    return None


def _sampling(
    native: Sampling, max_tokens: int | None, body: ChatCompletionBody | CompletionBody
) -> Sampling:
    overrides: dict[str, Any] = {
        "num_predict": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
    }
    values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    values["defaults"] = "neutral"  # OpenAI's semantics: temperature 1, top_p 1, no penalty
    stops = _stops(body.stop)
    if stops:
        values["stop"] = stops
    return dataclasses.replace(native, **values)


def _format(body: ChatCompletionBody) -> str | dict[str, Any] | None:
    rf = body.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return "json"
    if rf.json_schema is None or rf.json_schema.schema_ is None:
        raise InvalidRequest(
            "response_format json_schema needs json_schema.schema", param="response_format"
        )
    return rf.json_schema.schema_


def _tool_choice(body: ChatCompletionBody) -> str | None:
    if not body.tools:
        return None
    choice = body.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    name = choice.function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("tool_choice.function.name is required", param="tool_choice")
    return name


def _load_options(body: ChatCompletionBody | CompletionBody) -> tuple[Sampling, LoadOptions]:
    """Ollama's native ``options``; ``context_window`` (a DeepSeek-style alias some
    tutorials use) sets ``num_ctx`` unless ``options.num_ctx`` does."""
    native, load = parse_options(body.options)
    if body.context_window is not None and load.num_ctx is None:
        load = dataclasses.replace(load, num_ctx=body.context_window)
    return native, load


def chat_to_core(body: ChatCompletionBody) -> ChatRequest:
    native, load = _load_options(body)
    messages, prefix = to_messages(body.messages)
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
    return ChatRequest(
        model=_require_model(body.model),
        messages=messages,
        prefix=prefix,
        tools=tuple(
            Tool(t.function.name, t.function.description, t.function.parameters)
            for t in body.tools or []
        ),
        tool_choice=_tool_choice(body),
        format=_format(body),
        sampling=_sampling(native, max_tokens, body),
        load=load,
        keep_alive=parse_keep_alive(body.keep_alive),
        think=_think(body),
        n=body.n,
        logit_bias=_logit_bias(body.logit_bias),
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
    )


def completion_prompts(body: CompletionBody) -> list[str | list[int]]:
    p = body.prompt
    if isinstance(p, str):
        return [p]
    if not p or any(isinstance(x, list) and not x for x in p):
        raise InvalidRequest("prompt must not be an empty list", param="prompt")
    if all(isinstance(x, int) for x in p):
        return [p]  # type: ignore[list-item]
    return list(p)  # type: ignore[arg-type]


def completion_to_core(body: CompletionBody, prompt: str | list[int]) -> ChatRequest:
    if body.best_of not in (None, body.n):
        raise InvalidRequest("best_of is not supported; use n", param="best_of")
    native, load = _load_options(body)
    tokens: tuple[int, ...] = ()
    if isinstance(prompt, list):
        tokens, prompt = tuple(prompt), ""
    return ChatRequest(
        model=_require_model(body.model),
        prompt=prompt,
        context=tokens,
        suffix=body.suffix or None,
        sampling=_sampling(native, body.max_tokens, body),
        load=load,
        keep_alive=parse_keep_alive(body.keep_alive),
        n=body.n,
        logit_bias=_logit_bias(body.logit_bias),
        top_logprobs=body.logprobs,
    )


def embedding_inputs(body: EmbeddingBody) -> tuple[str, ...]:
    value = body.input
    if isinstance(value, str):
        return (value,)
    if all(isinstance(v, str) for v in value):
        return tuple(value)  # type: ignore[arg-type]
    raise InvalidRequest("token-id input is not supported for embeddings; send text", param="input")


def embed_to_core(body: EmbeddingBody) -> EmbedRequest:
    inputs = embedding_inputs(body)
    if not inputs or any(not s for s in inputs):
        raise InvalidRequest(
            "input must be a non-empty string or array of non-empty strings", param="input"
        )
    return EmbedRequest(model=_require_model(body.model), inputs=inputs, dimensions=body.dimensions)
