"""What a serving function returns, and priming: the first item is awaited before a
reply exists, so an early error (unknown model, full queue, a refusal) keeps its own
status instead of becoming a line in a 200 stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from llmux.core.chunks import ChatChunk, collect
from llmux.errors import BackendError

T = TypeVar("T")
Framing = Literal["ndjson", "sse", "json"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One object (``json``), or a stream of objects: NDJSON lines (Ollama) or SSE
    events ending with ``[DONE]`` (OpenAI). The server encodes it; a failure during a
    stream becomes that API's last error line/event."""

    framing: Framing
    body: Any = None
    events: AsyncIterator[dict[str, Any]] | None = None
    status: int = 200

    @classmethod
    def json(cls, body: Any, status: int = 200) -> Reply:
        return cls("json", body=body, status=status)


async def prime(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Pull the first item now (raising errors before the response starts)."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        raise BackendError("the backend ended the reply without any output") from None

    async def chained() -> AsyncIterator[T]:
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    return chained()


async def ndjson_reply(
    chunks: AsyncIterator[ChatChunk], render: Callable[[ChatChunk], dict[str, Any]], stream: bool
) -> Reply:
    """Ollama's shape: one object per chunk, or the stream collected into one."""
    primed = await prime(chunks)
    if stream:
        return Reply("ndjson", events=_rendered(primed, render))
    return Reply.json(render(await collect(primed)))


async def _rendered(
    chunks: AsyncIterator[ChatChunk], render: Callable[[ChatChunk], dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    async for chunk in chunks:
        yield render(chunk)
