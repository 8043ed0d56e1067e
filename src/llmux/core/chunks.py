"""What backends stream back: :class:`ChatChunk` values, the last one with ``done``.

A non-streaming reply is the same stream folded by :func:`collect`, so both modes
share one code path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from llmux.core.request import ToolCall

DoneReason = Literal["stop", "length", "load", "unload", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class Metrics:
    """Token counts and nanosecond timings of one generation."""

    prompt_tokens: int = 0  # tokens in the prompt, cached or not
    cached_tokens: int = 0  # reused from the prefix cache
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, spent in the reasoning trace
    total_ns: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0

    @property
    def prompt_eval_count(self) -> int:
        """Tokens newly evaluated for the prompt (what Ollama reports)."""
        return self.prompt_tokens - self.cached_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log probability and the top alternatives
    (each ``(token, logprob, utf8 bytes)``)."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The shape both Ollama and OpenAI use: token, logprob, bytes, top_logprobs."""
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(b)} for t, v, b in self.top],
        }


@dataclass(frozen=True, slots=True)
class ChatChunk:
    content: str = ""
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    done: bool = False
    done_reason: DoneReason | None = None
    metrics: Metrics | None = None
    context: tuple[int, ...] | None = None
    model: str = ""
    index: int = 0  # which choice, when a request asks for several
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class EmbedResult:
    model: str
    embeddings: list[list[float]]
    prompt_tokens: int
    total_ns: int
    load_ns: int


@dataclass(slots=True)
class _Folded:
    content: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


async def collect(chunks: AsyncIterator[ChatChunk]) -> ChatChunk:
    """Fold a stream into one final chunk with the whole text."""
    acc = _Folded()
    last = ChatChunk(done=True)
    async for chunk in chunks:
        acc.content.append(chunk.content)
        acc.thinking.append(chunk.thinking)
        acc.tool_calls.extend(chunk.tool_calls)
        acc.logprobs.extend(chunk.logprobs)
        last = chunk
    return ChatChunk(
        content="".join(acc.content),
        thinking="".join(acc.thinking),
        tool_calls=tuple(acc.tool_calls),
        logprobs=tuple(acc.logprobs),
        done=True,
        done_reason=last.done_reason,
        metrics=last.metrics,
        context=last.context,
        model=last.model,
    )
