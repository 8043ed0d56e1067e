"""Serving replies as HTTP responses, and the one wrapper for streams: a failure once a
stream has started ends it with that API's error line (NDJSON) or event (SSE), never a
hang or a cut connection. SSE streams end with ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from llmux.server.errors import NDJSON, SSE, as_llmux_error, stream_error
from llmux.serving.reply import Reply

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def encoded(
    events: AsyncIterator[dict[str, Any]], sse: bool, path: str
) -> AsyncIterator[str]:
    try:
        async for obj in events:
            yield f"data: {dumps(obj)}\n\n" if sse else dumps(obj) + "\n"
        if sse:
            yield "data: [DONE]\n\n"
    except Exception as exc:  # noqa: BLE001 - a stream always ends with an error event
        error = as_llmux_error(exc, f"stream on {path}")
        yield stream_error(error, path, SSE if sse else NDJSON).decode()
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def respond(reply: Reply, path: str) -> Response:
    if reply.framing == "json":
        return JSONResponse(reply.body, status_code=reply.status)
    assert reply.events is not None
    sse = reply.framing == "sse"
    return StreamingResponse(
        encoded(reply.events, sse, path),
        status_code=reply.status,
        media_type=SSE if sse else NDJSON,
        headers=SSE_HEADERS if sse else None,
    )
