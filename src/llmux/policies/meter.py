"""The outcome of an operation, read off the items that flow back: usage from the
final chunk's metrics or the embedding result, or, on the relay fast path, from the
relayed bytes (the last NDJSON line / SSE event / JSON body, whichever API it is).

:func:`observed` wraps a stream, times it and, when it ends however it ends, hands the
:class:`~llmux.policies.Outcome` to every policy's ``finished``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llmux.core.chunks import ChatChunk, EmbedResult, Metrics
from llmux.core.context import RequestContext
from llmux.errors import LlmuxError
from llmux.policies import Operation, Outcome, Policy, Usage

log = logging.getLogger(__name__)
TAIL_BYTES = 64 * 1024  # what the relay meter keeps of a reply: usage comes at its end
CACHE_HEADER = "x-llmux-cache"  # the response cache: hit-l1, hit-l2, hit-semantic, miss, bypass
_HITS = {"hit-l1": "l1", "hit-l2": "l2", "hit-semantic": "semantic"}


class ChunkMeter:
    """Usage from core chunks (several done chunks when ``n`` > 1 or several prompts:
    the prompt is counted once per request, completions once per choice)."""

    def __init__(self, choices: int = 1) -> None:
        self.choices = max(1, choices)
        self.usage = Usage()
        self.finish: str | None = None
        self.known = False
        self.pieces = 0
        self.model = ""
        self.metrics: Metrics | None = None

    def see(self, item: Any) -> None:
        if isinstance(item, ChatChunk):
            if item.model:
                self.model = item.model
            if not item.done:
                if item.content or item.thinking or item.tool_calls:
                    self.pieces += 1
                return
            if item.done:
                m = item.metrics
                if m is not None:
                    self.known = True
                    self.metrics = m
                    first = item.index % self.choices == 0
                    self.usage = Usage(
                        self.usage.prompt_tokens + (m.prompt_tokens if first else 0),
                        self.usage.completion_tokens + m.completion_tokens,
                        self.usage.cached_tokens + (m.cached_tokens if first else 0),
                    )
                self.finish = item.done_reason
        elif isinstance(item, EmbedResult):
            self.usage = Usage(prompt_tokens=item.prompt_tokens)
            self.known = True
            self.model = item.model

    def close(self) -> None:
        return None


_NUMBER = {
    key: re.compile(rb'"' + key.encode() + rb'"\s*:\s*(\d+)')
    for key in (
        "prompt_eval_count",
        "eval_count",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "prompt_cache_hit_tokens",
    )
}
_REASON = re.compile(rb'"(?:done_reason|finish_reason)"\s*:\s*"(\w+)"')


class RelayMeter:
    """Usage from relayed reply bytes. Only the last :data:`TAIL_BYTES` are kept; the
    last match of each field wins (text inside strings has its quotes escaped, so it
    never matches)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._kept = 0
        self.usage = Usage()
        self.finish: str | None = None
        self.known = False
        self.pieces = 0
        self.model = ""
        self.metrics: Metrics | None = None  # relayed bytes are not parsed for timings

    def see(self, item: Any) -> None:
        if not isinstance(item, bytes | bytearray):
            return
        self.pieces += item.count(b'"content"')
        self._parts.append(bytes(item))
        self._kept += len(item)
        while self._kept - len(self._parts[0]) >= TAIL_BYTES and len(self._parts) > 1:
            self._kept -= len(self._parts.pop(0))

    def close(self) -> None:
        tail = b"".join(self._parts)[-TAIL_BYTES:]
        self._parts.clear()

        def last(key: str) -> int:
            found = _NUMBER[key].findall(tail)
            return int(found[-1]) if found else 0

        prompt = last("prompt_eval_count") or last("prompt_tokens")
        completion = last("eval_count") or last("completion_tokens")
        cached = last("cached_tokens") or last("prompt_cache_hit_tokens")
        self.usage = Usage(prompt, completion, cached)
        self.known = bool(prompt or completion)
        reasons = _REASON.findall(tail)
        self.finish = reasons[-1].decode() if reasons else None


Meter = ChunkMeter | RelayMeter


async def timed_first(ctx: RequestContext, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``items``, with the backend's own time to its first item put into
    ``ctx.facts["backend_ttft_s"]`` (the gateway's overhead is the rest)."""
    began = time.perf_counter()
    first = True
    try:
        async for item in items:
            if first:
                ctx.facts["backend_ttft_s"] = time.perf_counter() - began
                first = False
            yield item
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:  # the backend's stream ends now, not when it is collected
            await close()


async def observed(
    ctx: RequestContext,
    op: Operation,
    items: AsyncIterator[Any],
    policies: Sequence[Policy],
    meter: Meter,
) -> AsyncIterator[Any]:
    """``items`` as they come; at the end, the outcome to each policy's ``finished``."""
    began = time.perf_counter()
    first: float | None = None
    error: LlmuxError | None = None
    cancelled = False
    try:
        async for item in items:
            if first is None:
                first = time.perf_counter()
            meter.see(item)
            yield item
    except LlmuxError as exc:
        error = exc
        raise
    except (asyncio.CancelledError, GeneratorExit):
        cancelled = True
        raise
    except Exception as exc:
        error = LlmuxError(f"internal error: {type(exc).__name__}")
        raise
    finally:
        meter.close()
        outcome = Outcome(
            usage=meter.usage,
            finish_reason=meter.finish,
            latency_s=time.perf_counter() - began,
            ttft_s=None if first is None else first - began,
            error=error,
            cancelled=cancelled,
            usage_known=meter.known,
            pieces=meter.pieces,
            served=meter.model,
            cache=_HITS.get(ctx.headers.get(CACHE_HEADER, "")) if ctx.headers else None,
            started=began,
            metrics=meter.metrics,
        )
        for policy in reversed(policies):
            try:
                policy.finished(ctx, op, outcome)
            except Exception:  # one policy's bookkeeping must not break the reply
                log.exception("policy %s failed in finished()", type(policy).__name__)
