"""``HttpMetrics``: every HTTP request counted by method, route template and status,
and timed to the end of its response (pure ASGI, just outside the error boundary, so
it sees the status the boundary answered with).

The route is the template of the route that matched (``/api/conversations/{id}``), or
``other``: a path no route has never mints a series. Without metrics (``[metrics]
enabled = false``, or a test's services without them) it passes requests on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.observability.metrics import OTHER, Metrics
from llmux.server.access import route_template

TEMPLATES = 4096  # paths remembered with their template


async def answered(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, done: Callable[[int, float], None]
) -> None:
    """Run ``app``; at its end, however it ends, ``done(status, seconds)`` with the status
    it answered with (500 if it never started a response) and the time to its end."""
    began = time.perf_counter()
    status = 500

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, sending)
    finally:
        done(status, time.perf_counter() - began)


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[str, str] = {}
        self._metrics: Metrics | bool | None = False  # False: not looked up yet

    def _find(self, scope: Scope) -> Metrics | None:
        if self._metrics is False:
            services = getattr(scope["app"].state, "services", None)
            if services is None:
                return None  # the lifespan has not made them yet
            self._metrics = getattr(services, "metrics", None)
        return self._metrics if isinstance(self._metrics, Metrics) else None

    def _template(self, scope: Scope) -> str:
        path = scope["path"]
        found = self._templates.get(path)
        if found is None:
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            found = self._templates[path] = route_template(scope) or OTHER
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self._find(scope) if scope["type"] == "http" else None
        if metrics is None:
            await self.app(scope, receive, send)
            return
        await answered(
            self.app, scope, receive, send,
            lambda status, seconds: self._count(metrics, scope, status, seconds),
        )  # fmt: skip

    def _count(self, metrics: Metrics, scope: Scope, status: int, seconds: float) -> None:
        method: Any = scope.get("method", "GET")
        route = self._template(scope)
        metrics.http.labels(method, route, str(status)).inc()
        metrics.http_duration.labels(method, route).observe(seconds)
