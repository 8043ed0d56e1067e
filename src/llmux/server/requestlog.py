"""``RequestLog``: one ``llmux.http`` line for each HTTP request that no model operation
logged (listings, admin calls, refusals before the gateway: a 401, a 404), so that with
``[server] access_log`` every request leaves exactly one line. A model request's line
is the access log's (``policies/access_log.py``), which sets ``ctx.facts["logged"]``.

Pure ASGI, just inside the identity layer and outside the error boundary, so it sees the
status the boundary answered with. It logs the path, never the query string (where
clients put keys: ``?key=``), with the method, status, time to the end of the response,
the client and the principal. It replaces uvicorn's own access log, which ``llmux
serve`` turns off.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from llmux.core.context import RequestContext
from llmux.observability.logs import FIELDS
from llmux.server.metering import answered

log = logging.getLogger("llmux.http")


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        await answered(
            self.app, scope, receive, send, lambda status, s: self._line(scope, status, s)
        )

    @staticmethod
    def _line(scope: Scope, status: int, seconds: float) -> None:
        ctx = scope.get("state", {}).get("ctx")
        if not isinstance(ctx, RequestContext) or ctx.facts.get("logged"):
            return
        method: Any = scope.get("method", "GET")
        fields = {
            "method": method,
            "route": ctx.route,
            "api": ctx.api,
            "status": status,
            "latency_ms": round(seconds * 1000, 2),
            "principal": ctx.principal.name,
            "principal_id": ctx.principal.id,
            "client": ctx.client,
        }
        log.info("%s %s %d", method, ctx.route, status, extra={FIELDS: fields})
