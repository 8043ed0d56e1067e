"""Streaming replies: prime the stream so early errors keep their status, then NDJSON.

The first chunk is awaited before any header is sent: an unknown model, a capability
error or a full queue answers with its own status code. After that the status is 200
and a failure becomes one last ``{"error": ...}`` line, never a hang.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.responses import JSONResponse, Response, StreamingResponse

from llmux.core.chunks import ChatChunk, collect
from llmux.errors import BackendError, LlmuxError
from llmux.server.errors import error_body

log = logging.getLogger(__name__)
T = TypeVar("T")


async def prime(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Pull the first item now (raising errors before the response starts)."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        raise BackendError("the backend ended the reply without any output") from None

    async def chained() -> AsyncIterator[T]:
        yield first
        async for item in stream:
            yield item

    return chained()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def ndjson_lines(
    chunks: AsyncIterator[ChatChunk], render: Callable[[ChatChunk], dict[str, Any]]
) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield dumps(render(chunk)) + "\n"
    except LlmuxError as exc:
        yield dumps({"error": exc.message}) + "\n"
    except Exception:
        log.exception("stream failed")
        yield dumps({"error": "internal server error; see the server log"}) + "\n"


async def ollama_reply(
    chunks: AsyncIterator[ChatChunk], render: Callable[[ChatChunk], dict[str, Any]], stream: bool
) -> Response:
    primed = await prime(chunks)
    if stream:
        return StreamingResponse(ndjson_lines(primed, render), media_type="application/x-ndjson")
    return JSONResponse(render(await collect(primed)))


async def sse_events(payloads: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """``data: {json}`` events ending with ``data: [DONE]``; a failure is sent as
    ``data: {"error": {...}}`` (the OpenAI SDK raises on it) and ends the stream."""
    try:
        async for obj in payloads:
            yield f"data: {dumps(obj)}\n\n"
        yield "data: [DONE]\n\n"
    except LlmuxError as exc:
        yield f"data: {dumps(error_body(exc, '/v1'))}\n\n"
    except Exception:
        log.exception("stream failed")
        yield f"data: {dumps(error_body(LlmuxError('internal server error; see the server log'), '/v1'))}\n\n"


def sse_response(payloads: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(
        sse_events(payloads),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
