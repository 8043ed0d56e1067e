"""Pieces both upstream translations share: images as data URIs, ``<think>`` text split
into the reasoning field, logprobs, and the clock that times a generation."""

from __future__ import annotations

import base64
import time
from typing import Any

from llmux.core.chunks import Metrics, TokenLogprob
from llmux.core.reasoning import ReasoningSplitter

_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def image_mime(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return "image/png"


def data_uri(data: bytes) -> str:
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode()}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ThinkText:
    """Routes ``<think>...</think>`` at the start of a reply into ``thinking``; once the
    answer has begun without (or after) a think block, text passes straight through."""

    __slots__ = ("_plain", "_splitter")

    def __init__(self) -> None:
        self._splitter: ReasoningSplitter | None = ReasoningSplitter()
        self._plain = False

    def feed(self, text: str) -> tuple[str, str]:
        if self._plain or not text:
            return "", text
        assert self._splitter is not None
        thinking, content = self._splitter.feed(text)
        if content:  # the answer has begun: the splitter holds nothing back any more
            self._plain = True
            self._splitter = None
        return thinking, content

    def flush(self) -> tuple[str, str]:
        if self._splitter is None:
            return "", ""
        return self._splitter.flush()


def token_logprobs(items: Any) -> tuple[TokenLogprob, ...]:
    """Ollama's and OpenAI's logprob items share one shape."""
    if not isinstance(items, list):
        return ()
    out = []
    for it in items:
        if not isinstance(it, dict):
            continue
        top = tuple(
            (str(t.get("token", "")), float(t.get("logprob", 0.0)), tuple(t.get("bytes") or ()))
            for t in it.get("top_logprobs") or ()
            if isinstance(t, dict)
        )
        out.append(
            TokenLogprob(
                token=str(it.get("token", "")),
                logprob=float(it.get("logprob", 0.0)),
                bytes=tuple(it.get("bytes") or ()),
                top=top,
            )
        )
    return tuple(out)


class Clock:
    """Nanosecond timings measured here, for upstreams that report none."""

    __slots__ = ("first", "last", "start")

    def __init__(self) -> None:
        self.start = time.perf_counter_ns()
        self.first = 0
        self.last = 0

    def token(self) -> None:
        now = time.perf_counter_ns()
        if not self.first:
            self.first = now
        self.last = now

    def metrics(self, prompt: int, cached: int, completion: int, reasoning: int = 0) -> Metrics:
        end = time.perf_counter_ns()
        first = self.first or end
        return Metrics(
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            total_ns=end - self.start,
            prompt_eval_ns=first - self.start,
            eval_ns=(self.last or end) - first,
        )
