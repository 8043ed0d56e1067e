"""Core chunks -> OpenAI objects: ``chat.completion(.chunk)``, ``text_completion``,
embeddings and model lists, with DeepSeek's fields (``reasoning_content``, cache-hit
usage) included.

Streamed deltas follow OpenAI and DeepSeek: the first of a choice carries
``role: "assistant"`` (with ``content: ""``, or ``null`` when the reply opens with
reasoning); a delta with reasoning or tool calls and no text has ``content: null``
(so ``content is not None`` means the answer has started); the closing one is ``{}``
with ``finish_reason``. Clients read ``delta.content or ""``. ``id`` and ``created``
stay constant across a stream.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llmux.core.chunks import ChatChunk, EmbedResult, Metrics, TokenLogprob
from llmux.core.models import ModelInfo

FINGERPRINT = "fp_llmux"


def usage_object(
    prompt: Metrics | None, completion_tokens: int, reasoning_tokens: int
) -> dict[str, Any]:
    p = prompt.prompt_tokens if prompt else 0
    cached = prompt.cached_tokens if prompt else 0
    return {
        "prompt_tokens": p,
        "completion_tokens": completion_tokens,
        "total_tokens": p + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "prompt_cache_hit_tokens": cached,
        "prompt_cache_miss_tokens": p - cached,
    }


def finish_reason(chunk: ChatChunk) -> str:
    """The OpenAI finish reason of a final chunk (tool calls are the caller's to see)."""
    if chunk.done_reason in ("length", "content_filter"):
        return chunk.done_reason
    return "stop"


def logprob_content(items: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    return [lp.as_dict() for lp in items]


@dataclass
class _ChoiceState:
    content: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    started: bool = False


@dataclass
class ChatRenderer:
    """Renders one chat completion, streamed (:meth:`chunk`) or whole (:meth:`whole`)."""

    model: str
    include_usage: bool = False
    logprobs: bool = False
    reasoning_fields: tuple[str, ...] = ("reasoning_content",)
    parallel_tool_calls: bool = True  # False: a choice keeps only its first call
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    choices: dict[int, _ChoiceState] = field(default_factory=dict)
    prompt_metrics: Metrics | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def _absorb(self, c: ChatChunk) -> _ChoiceState:
        st = self.choices.setdefault(c.index, _ChoiceState())
        st.content.append(c.content)
        st.thinking.append(c.thinking)
        st.logprobs.extend(c.logprobs)
        for call in c.tool_calls:
            if st.tool_calls and not self.parallel_tool_calls:
                break
            st.tool_calls.append(
                {
                    "index": len(st.tool_calls),
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False),
                    },
                }
            )
        if c.done:
            st.finish = "tool_calls" if st.tool_calls else finish_reason(c)
            m = c.metrics or Metrics()
            if self.prompt_metrics is None:
                self.prompt_metrics = m
            self.completion_tokens += m.completion_tokens
            self.reasoning_tokens += m.reasoning_tokens
        return st

    def chunk(self, c: ChatChunk) -> list[dict[str, Any]]:
        n_calls = len(self.choices.get(c.index, _ChoiceState()).tool_calls)
        st = self._absorb(c)
        out = []
        if not st.started:
            st.started = True
            out.append(
                self._base(
                    [
                        {
                            "index": c.index,
                            "delta": {
                                "role": "assistant",
                                "content": None if c.thinking and not c.content else "",
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            )
        if c.done:
            out.append(
                self._base(
                    [
                        {
                            "index": c.index,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": st.finish,
                        }
                    ]
                )
            )
            return out
        delta: dict[str, Any] = {"content": c.content or None}
        if c.thinking:
            delta.update(dict.fromkeys(self.reasoning_fields, c.thinking))
        if c.tool_calls:
            delta["tool_calls"] = st.tool_calls[n_calls:]
        logprobs = (
            {"content": logprob_content(c.logprobs), "refusal": None}
            if self.logprobs and c.logprobs
            else None
        )
        if c.content or c.thinking or c.tool_calls or logprobs:
            out.append(
                self._base(
                    [
                        {
                            "index": c.index,
                            "delta": delta,
                            "logprobs": logprobs,
                            "finish_reason": None,
                        }
                    ]
                )
            )
        return out

    def usage_chunk(self) -> dict[str, Any]:
        out = self._base([])
        out["usage"] = self.usage()
        return out

    def usage(self) -> dict[str, Any]:
        return usage_object(self.prompt_metrics, self.completion_tokens, self.reasoning_tokens)

    def whole(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            st = self.choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(st.content)}
            thinking = "".join(st.thinking)
            if thinking:
                message.update(dict.fromkeys(self.reasoning_fields, thinking))
            if st.tool_calls:
                message["tool_calls"] = [
                    {k: v for k, v in call.items() if k != "index"} for call in st.tool_calls
                ]
                message["content"] = message["content"] or None
            logprobs = (
                {"content": logprob_content(tuple(st.logprobs)), "refusal": None}
                if self.logprobs
                else None
            )
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": st.finish,
                }
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": self.usage(),
        }


@dataclass
class CompletionRenderer:
    """Renders ``/v1/completions`` (and DeepSeek's FIM ``/beta/completions``)."""

    model: str
    include_usage: bool = False
    logprobs: bool = False
    id: str = field(default_factory=lambda: "cmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    chat: ChatRenderer = field(init=False)

    def __post_init__(self) -> None:
        self.chat = ChatRenderer(self.model, logprobs=self.logprobs)

    def _obj(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
               "system_fingerprint": FINGERPRINT, "choices": choices}  # fmt: skip
        if self.include_usage:
            out["usage"] = None
        return out

    def chunk(self, c: ChatChunk, echo: str = "") -> list[dict[str, Any]]:
        first = c.index not in self.chat.choices
        self.chat._absorb(c)
        if c.done:
            finish = finish_reason(c)
            return [
                self._obj(
                    [{"index": c.index, "text": "", "logprobs": None, "finish_reason": finish}]
                )
            ]
        text = (echo if first else "") + c.content
        if not text and not c.logprobs:
            return []
        lp = legacy_logprobs(c.logprobs) if self.logprobs else None
        return [
            self._obj([{"index": c.index, "text": text, "logprobs": lp, "finish_reason": None}])
        ]

    def usage_chunk(self) -> dict[str, Any]:
        out = self._obj([])
        out["usage"] = self.chat.usage()
        return out

    def whole(self, echoes: dict[int, str]) -> dict[str, Any]:
        choices = []
        for index in sorted(self.chat.choices):
            st = self.chat.choices[index]
            lp = legacy_logprobs(tuple(st.logprobs)) if self.logprobs else None
            text = echoes.get(index, "") + "".join(st.content)
            choices.append(
                {"index": index, "text": text, "logprobs": lp, "finish_reason": st.finish}
            )
        out = self._obj(choices)
        out["usage"] = self.chat.usage()
        return out


def legacy_logprobs(items: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    offsets, pos = [], 0
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{t: v for t, v, _ in lp.top} for lp in items],
        "text_offset": offsets,
    }


def embedding_list(result: EmbedResult, encoding: str) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(result.embeddings):
        value: Any = vec
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def model_object(info: ModelInfo, name: str | None = None) -> dict[str, Any]:
    """An OpenAI model object; ``name`` lists it under another id (an alias)."""
    return {
        "id": name or info.name,
        "object": "model",
        "created": info.created,
        "owned_by": info.owned_by,
    }
