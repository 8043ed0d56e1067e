"""The OpenAI API's error object, ``{"error": {"message", "type", "param", "code"}}``,
for an :class:`~llmux.errors.LlmuxError`: what the error boundary answers on the OpenAI
and DeepSeek routes, and what a Batch API line that failed holds as its body."""

from __future__ import annotations

from typing import Any

from llmux.errors import LlmuxError

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # as OpenAI answers a wrong key
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_object(exc: LlmuxError) -> dict[str, Any]:
    kind = OPENAI_TYPES.get(
        exc.status, "server_error" if exc.status in (502, 503, 504) else "api_error"
    )
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}
