"""Ollama wire bodies <-> core requests (the server side parses them, the upstream
client writes them). Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
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
from llmux.protocols.ollama.wire import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    WireMessage,
)

log = logging.getLogger(__name__)

INT_OPTIONS = {"num_predict", "top_k", "seed", "repeat_last_n", "num_ctx", "num_thread", "num_gpu",
               "num_batch", "num_keep", "main_gpu"}  # fmt: skip
FLOAT_OPTIONS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                 "frequency_penalty", "tfs_z", "mirostat_tau", "mirostat_eta"}  # fmt: skip
BOOL_OPTIONS = {"use_mmap", "use_mlock", "numa", "low_vram", "vocab_only", "penalize_newline"}
INT_ALSO = {"mirostat"}
ALIASES = {"max_tokens": "num_predict"}  # common in tutorials
SAMPLING_KEYS = ("num_predict", "temperature", "top_k", "top_p", "min_p", "typical_p", "seed",
                 "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty",
                 "num_keep")  # fmt: skip
LOAD_KEYS = ("num_ctx", "num_thread", "num_gpu")
ROLES: set[str] = {"system", "user", "assistant", "tool"}
_DATA_URI = re.compile(r"^data:[\w/+.-]+;base64,", re.I)


INT64 = 2**63  # Ollama's options are Go ints: a number outside int64 does not unmarshal
INT32 = 2**31  # the engine's integer parameters are C ints; the seed is taken modulo 2**32


def _typed(key: str, value: Any) -> Any:
    if key in INT_OPTIONS or key in INT_ALSO:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (isinstance(value, int) or (math.isfinite(value) and value == int(value)))
        ):
            raise InvalidRequest(f'option "{key}" must be of type integer', param=f"options.{key}")
        number = int(value)
        if not -INT64 <= number < INT64:
            raise InvalidRequest(
                f'option "{key}" is out of range for a 64-bit integer', param=f"options.{key}"
            )
        return number if key == "seed" else max(-INT32, min(INT32 - 1, number))
    if key in FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f'option "{key}" must be of type number', param=f"options.{key}")
        real = float(value) if -1e308 < value < 1e308 else math.nan  # huge ints, inf
        if not math.isfinite(real):
            raise InvalidRequest(f'option "{key}" must be a finite number', param=f"options.{key}")
        return real
    if key in BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise InvalidRequest(f'option "{key}" must be of type boolean', param=f"options.{key}")
        return value
    if key == "stop":
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise InvalidRequest(
                'option "stop" must be a string or an array of strings', param="options.stop"
            )
        return tuple(value)
    return value


def parse_options(options: dict[str, Any] | None) -> tuple[Sampling, LoadOptions]:
    """Typed sampling and load options; unknown keys are logged and ignored."""
    sampling: dict[str, Any] = {}
    load: dict[str, Any] = {}
    for raw_key, value in (options or {}).items():
        key = ALIASES.get(raw_key, raw_key)
        known = key in INT_OPTIONS | FLOAT_OPTIONS | BOOL_OPTIONS | INT_ALSO | {"stop"}
        if not known:
            log.info("ignoring unknown option %r", raw_key)
            continue
        if value is None:
            continue
        typed = _typed(key, value)
        if key in SAMPLING_KEYS or key == "stop":
            if raw_key != key and key in sampling:
                continue  # the canonical name wins over its alias
            sampling[key] = typed
        elif key in LOAD_KEYS:
            load[key] = typed
    if "num_ctx" in load and load["num_ctx"] < 1:
        raise InvalidRequest('option "num_ctx" must be positive', param="options.num_ctx")
    return Sampling(**sampling), LoadOptions(**load)


def options_object(sampling: Sampling | None, load: LoadOptions) -> dict[str, Any]:
    """Core sampling and load options -> Ollama's ``options`` (only what is set)."""
    out: dict[str, Any] = {}
    if sampling is not None:
        for key in SAMPLING_KEYS:
            value = getattr(sampling, key)
            if value is not None:
                out[key] = value
        if sampling.stop:
            out["stop"] = list(sampling.stop)
    for key in LOAD_KEYS:
        value = getattr(load, key)
        if value is not None:
            out[key] = value
    return out


def decode_image(data: str, where: str) -> bytes:
    """Base64 image data; a ``data:image/...;base64,`` prefix is accepted too."""
    payload = _DATA_URI.sub("", data.strip(), count=1)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"invalid image data in {where}: not valid base64", param=where
        ) from None


def _arguments(value: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if value else {}
    except json.JSONDecodeError:
        raise InvalidRequest(
            "tool call arguments must be a JSON object", param="tool_calls"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param="tool_calls")
    return parsed


def to_message(m: WireMessage, i: int) -> Message:
    role = m.role.lower()
    if role not in ROLES:
        raise InvalidRequest(
            f"messages[{i}].role: unknown role {m.role!r}; use system, user, assistant or tool",
            param=f"messages[{i}].role",
        )
    images = tuple(decode_image(img, f"messages[{i}].images") for img in m.images or [])
    calls = tuple(
        ToolCall(
            name=c.function.name, arguments=_arguments(c.function.arguments), id=c.id or "", index=j
        )
        for j, c in enumerate(m.tool_calls or [])
    )
    role_typed: Role = role  # type: ignore[assignment]
    return Message(
        role=role_typed,
        content=m.content or "",
        thinking=m.thinking or "",
        images=images,
        tool_calls=calls,
        tool_name=m.tool_name,
        tool_call_id=m.tool_call_id,
    )


def _format(value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if value in (None, ""):
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise InvalidRequest(
        f'invalid format {value!r}: use "json" or a JSON Schema object', param="format"
    )


def require_model(model: str) -> str:
    if not model or not model.strip():
        raise InvalidRequest("model is required", param="model")
    return model


def _top_logprobs(logprobs: bool | None, top: int | None) -> int | None:
    """``None``: no logprobs; otherwise how many alternatives per token."""
    return (top or 0) if logprobs else None


def _common(body: ChatBody | GenerateBody) -> dict[str, Any]:
    """The fields /api/chat and /api/generate share."""
    sampling, load = parse_options(body.options)
    return dict(
        model=require_model(body.model),
        format=_format(body.format),
        sampling=sampling,
        load=load,
        keep_alive=parse_keep_alive(body.keep_alive),
        think=body.think,
        top_logprobs=_top_logprobs(body.logprobs, body.top_logprobs),
    )


def chat_to_core(body: ChatBody) -> ChatRequest:
    return ChatRequest(
        messages=tuple(to_message(m, i) for i, m in enumerate(body.messages)),
        tools=tuple(
            Tool(t.function.name, t.function.description, t.function.parameters)
            for t in body.tools or []
        ),
        **_common(body),
    )


def generate_to_core(body: GenerateBody) -> ChatRequest:
    if body.raw and (body.template or body.system or body.context):
        raise InvalidRequest("raw mode does not support template, system, or context", param="raw")
    common = _common(body)
    common.update(
        suffix=body.suffix or None,
        images=tuple(decode_image(img, "images") for img in body.images or []),
        context=tuple(body.context or ()),
        return_context=not body.raw,
    )
    if body.raw or body.suffix:
        return ChatRequest(prompt=body.prompt, **common)
    messages: list[Message] = []
    if body.system:
        messages.append(Message(role="system", content=body.system))
    messages.append(Message(role="user", content=body.prompt))
    return ChatRequest(messages=tuple(messages), template=body.template or None, **common)


def embed_to_core(body: EmbedBody) -> EmbedRequest:
    value = body.input
    if value is None:
        inputs: tuple[str, ...] = ()
    elif isinstance(value, str):
        inputs = (value,)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        inputs = tuple(value)
    else:
        raise InvalidRequest(
            "invalid input type: use a string or an array of strings", param="input"
        )
    _, load = parse_options(body.options)
    return EmbedRequest(
        model=require_model(body.model),
        inputs=inputs,
        truncate=body.truncate,
        dimensions=body.dimensions,
        load=load,
        keep_alive=parse_keep_alive(body.keep_alive),
    )


def embeddings_to_core(body: EmbeddingsBody) -> EmbedRequest:
    _, load = parse_options(body.options)
    return EmbedRequest(
        model=require_model(body.model),
        inputs=(body.prompt,) if body.prompt else (),
        normalize=False,
        load=load,
        keep_alive=parse_keep_alive(body.keep_alive),
    )
