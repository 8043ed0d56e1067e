"""The access layer (pure ASGI, after the guard, before the relay): deny by default.

When access control is on, every request needs a credential unless its route is public
(``auth/scopes.py`` lists the scope of every route): ``Authorization: Bearer <API key
or token>``, ``x-api-key: <API key>``, or the web UI's session cookie. A request that
changes something (any method but GET, HEAD, OPTIONS) on the strength of the cookie
alone must also carry the session's CSRF token in ``X-CSRF-Token`` (the UI reads it from
the ``llmux_csrf`` cookie), so a form posted from another page is refused. The principal it stands for goes into the
request's context; a missing scope is 403 ``insufficient_scope``. Errors are raised to
the boundary, which answers in the route's API shape; a WebSocket handshake that fails
is closed with 1008 (policy violation) before it is accepted.

:func:`auth_enabled` decides from the settings whether the layer is on at all, and
refuses to serve beyond loopback without it unless ``[auth] mode = "off"``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from starlette.requests import cookie_parser
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from llmux.auth import scopes as sc
from llmux.auth.control import AccessControl
from llmux.config import Settings
from llmux.core.context import RequestContext
from llmux.errors import Forbidden, InsufficientScope, LlmuxError, Unauthorized
from llmux.server.guard import is_loopback

log = logging.getLogger(__name__)
MAX_CREDENTIAL = 8192
SESSION_COOKIE = "llmux_session"
CSRF_COOKIE = "llmux_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def auth_enabled(settings: Settings) -> bool:
    """Whether access control is on; a LlmuxError (one line, naming the setting) when
    llmux would serve beyond loopback with it off by default."""
    mode = settings.auth.mode
    host, port = settings.bind
    if mode != "auto":
        return mode == "on"
    if is_loopback(host):
        return False
    raise LlmuxError(
        f"refusing to serve on {host}:{port} without access control: set [auth] mode = "
        '"on" (LLMUX_AUTH__MODE=on) to require credentials, or mode = "off" to serve '
        "without them"
    )


def warn_if_off(settings: Settings) -> None:
    if settings.auth.mode == "off":
        host, port = settings.bind
        log.warning(
            'access control is off ([auth] mode = "off"): anyone who reaches %s:%s can use '
            "every route, model management included", host, port,
        )  # fmt: skip


def credential(scope: Scope) -> str | None:
    """The bearer credential a request carries, if any."""
    found: str | None = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, rest = header.partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                return rest.strip()[:MAX_CREDENTIAL]
        elif key == b"x-api-key" and value:
            found = value.decode("latin-1").strip()[:MAX_CREDENTIAL]
    return found or None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def session_cookie(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    if not raw:
        return None
    return cookie_parser(raw).get(SESSION_COOKIE) or None


def route_template(scope: Scope) -> str | None:
    """The path template of the route a request is for (``/api/conversations/{id}``),
    or None when no route has its path."""
    app = scope.get("app")
    routes: list[Any] = getattr(getattr(app, "state", None), "routes", None) or []
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(route.path)
        if match == Match.PARTIAL and partial is None:
            partial = str(route.path)
    return partial


class Access:
    def __init__(self, app: ASGIApp, *, metrics_token: str | None = None) -> None:
        self.app = app
        # /metrics also opens to this bearer token (a scraper needs no API key); kept as
        # a digest and compared in constant time
        self._metrics_token = _digest(metrics_token) if metrics_token else None
        self._templates: dict[tuple[str, str], str | None] = {}
        self._control: AccessControl | None = None

    def _template(self, scope: Scope) -> str | None:
        key = (scope["type"], scope["path"])
        if key not in self._templates:
            if len(self._templates) > 4096:
                self._templates.clear()
            self._templates[key] = route_template(scope)
        return self._templates[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        template = self._template(scope)
        required = sc.route_scope(template) if template is not None else sc.ANY
        if required == sc.PUBLIC or (required == sc.METRICS and self._scraper(scope)):
            await self.app(scope, receive, send)
            return
        try:
            await self._admit(scope, required)
        except LlmuxError:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            raise
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, required: str) -> None:
        control = self._control or self._find_control(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        ctx = state.get("ctx")
        given = credential(scope)
        client = ctx.client if isinstance(ctx, RequestContext) else None
        cookie = session_cookie(scope) if given is None else None
        if given is not None:
            principal = await control.authenticate(given, client)
        elif cookie is not None:
            principal, csrf = await control.session(cookie, client)
            if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
                sent = header(scope, b"x-csrf-token") or ""
                if not hmac.compare_digest(sent.encode(), csrf.encode()):
                    raise Forbidden(
                        "the CSRF token is missing or wrong: a change made with the UI's "
                        "session needs the X-CSRF-Token header (from the llmux_csrf cookie)"
                    )
        else:
            raise Unauthorized(
                "authentication required: send an API key as 'Authorization: Bearer "
                "sk-llmux-...' (or 'x-api-key'), or an access token from POST /oauth2/token"
            )
        if required != sc.ANY and required not in principal.scopes:
            raise InsufficientScope(
                required,
                f"this credential lacks the '{required}' scope this route requires",
            )
        if isinstance(ctx, RequestContext):  # (not dataclasses.replace: 5x the time)
            state["ctx"] = RequestContext(
                ctx.api, ctx.route, ctx.request_id, ctx.client, principal, ctx.headers,
                ctx.cache_control, ctx.facts, ctx.started,
            )  # fmt: skip

    def _scraper(self, scope: Scope) -> bool:
        given = credential(scope)
        if self._metrics_token is None or given is None:
            return False
        return hmac.compare_digest(_digest(given), self._metrics_token)

    def _find_control(self, scope: Scope) -> AccessControl:
        """The app's access control, once its services are up (the lifespan made them)."""
        found: AccessControl = scope["app"].state.services.access
        self._control = found
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
