"""The one error boundary: where exceptions become wire errors.

Ollama's native API (``/``, ``/api/*``) answers ``{"error": "..."}``; the OpenAI and
DeepSeek routes answer ``{"error": {"message", "type", "param", "code"}}``.

:class:`ErrorBoundary` is an ASGI middleware around everything below the identity layer
(guard, relay, routes). An :class:`~llmux.errors.LlmuxError`, or any unexpected
exception (logged with its traceback, answered as a 500 without internals), raised
before the response starts becomes that API's error response with the error's status
and headers. Raised after a stream has started, it becomes the stream's last line
(NDJSON) or event (SSE). The framework's own errors (no such route, wrong method, a
parameter that does not validate) are raised as LlmuxErrors to the boundary too.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.errors import InvalidRequest, LlmuxError, MethodNotAllowed, NotFound
from llmux.protocols.openai.errors import error_object

log = logging.getLogger(__name__)

INTERNAL = "internal server error; see the server log"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def is_ollama_path(path: str) -> bool:
    return path == "/" or path == "/api" or path.startswith("/api/")


def error_body(exc: LlmuxError, path: str) -> dict[str, Any]:
    if is_ollama_path(path):
        return {"error": exc.message}
    return error_object(exc)


def error_response(exc: LlmuxError, path: str) -> Response:
    return JSONResponse(
        error_body(exc, path), status_code=exc.status, headers=exc.response_headers()
    )


def stream_error(exc: LlmuxError, path: str, content_type: str) -> bytes:
    """The last line/event that ends a started stream of ``content_type``."""
    body = json.dumps(error_body(exc, path), ensure_ascii=False, separators=(",", ":"))
    if content_type.startswith(SSE):
        return f"data: {body}\n\n".encode()
    return (body + "\n").encode()


def as_llmux_error(exc: BaseException, where: str) -> LlmuxError:
    if isinstance(exc, LlmuxError):
        return exc
    log.error("unexpected error on %s", where, exc_info=exc)
    return LlmuxError(INTERNAL)


class ErrorBoundary:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "ended": False, "type": ""}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                for key, value in message.get("headers", []):
                    if key.lower() == b"content-type":
                        state["type"] = value.decode("latin-1")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["ended"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the boundary answers every failure
            path = scope.get("path", "")
            error = as_llmux_error(exc, f"{scope.get('method')} {path}")
            if not state["started"]:
                if error.status >= 500:
                    log.warning(
                        "%s %s -> %d: %s", scope["method"], path, error.status, error.message
                    )
                await error_response(error, path)(scope, receive, send)
            elif not state["ended"]:
                kind = str(state["type"])
                streamed = kind.startswith((NDJSON, SSE))
                tail = stream_error(error, path, kind) if streamed else b""
                await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    path, method = request.url.path, request.method
    if exc.status_code == 404:
        raise NotFound(f"{method} {path} not found; see docs/api.md for the routes")
    if exc.status_code == 405:
        allowed = ", ".join(allowed_methods(request))
        raise MethodNotAllowed(
            f"method {method} not allowed for {path}; use {allowed}", headers={"Allow": allowed}
        )
    raise LlmuxError(str(exc.detail), status=exc.status_code, headers=dict(exc.headers or {}))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first
    route that matched it). ``app.state.routes`` holds the app's routes."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "routes", ()):
        match, _ = route.matches({**request.scope, "method": "OPTIONS"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    raise InvalidRequest("invalid request: " + "; ".join(parts))


def install_error_handlers(app: FastAPI) -> None:
    """The framework's errors go to the boundary as LlmuxErrors."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
