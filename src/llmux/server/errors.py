"""The one place where exceptions become wire errors.

Ollama's native API (``/``, ``/api/*``) answers ``{"error": "..."}``; the OpenAI and
DeepSeek routes answer ``{"error": {"message", "type", "param", "code"}}``.
Unexpected exceptions are logged with their traceback and answered as a 500 without
internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from llmux.errors import InvalidRequest, LlmuxError, MethodNotAllowed, NotFound

log = logging.getLogger(__name__)

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def is_ollama_path(path: str) -> bool:
    return path == "/" or path == "/api" or path.startswith("/api/")


def error_body(exc: LlmuxError, path: str) -> dict[str, Any]:
    if is_ollama_path(path):
        return {"error": exc.message}
    return {
        "error": {
            "message": exc.message,
            "type": OPENAI_TYPES.get(
                exc.status, "server_error" if exc.status in (502, 503, 504) else "api_error"
            ),
            "param": exc.param,
            "code": exc.code,
        }
    }


def error_response(exc: LlmuxError, path: str) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(error_body(exc, path), status_code=exc.status, headers=headers)


async def _llmux_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LlmuxError)
    if exc.status >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
    return error_response(exc, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    mapped: LlmuxError
    if exc.status_code == 404:
        mapped = NotFound(
            f"{request.method} {request.url.path} not found; see docs/api.md for the routes"
        )
    elif exc.status_code == 405:
        mapped = MethodNotAllowed(f"method {request.method} not allowed for {request.url.path}")
    else:
        mapped = LlmuxError(str(exc.detail))
        mapped.status = exc.status_code
    response = error_response(mapped, request.url.path)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(InvalidRequest(str(exc.errors()[:3])), request.url.path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(LlmuxError("internal server error; see the server log"), request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LlmuxError, _llmux_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
