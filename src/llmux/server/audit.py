"""The audit layer (pure ASGI, just outside the access layer): one audit record per
administrative action, and, with ``[audit] wait_for_fsync``, a response's end held
until its record is on disk.

An **administrative action** is any request but GET, HEAD and OPTIONS to ``/admin/*``,
``/api/keys*``, the model store (``/api/pull``, ``push``, ``create``, ``copy``,
``delete``, ``blobs``), ``/auth/setup`` and ``/oauth2/token``; reading the trail
(``GET /admin/audit*``, ``/v1/audit``) is recorded as well. The record holds the route
template, the method, the status the client got (and the error's code), the principal,
the client address and the **target**: the path parameters, and from a small JSON or
form body only the fields in :data:`TARGET_FIELDS` (names, never a password, secret or
token). It is written before the response's last bytes are sent; a request refused by
the access layer (401, 403) is recorded too, as the principal it could not prove.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.audit.policy import SYNCED
from llmux.audit.trail import AuditTrail
from llmux.core.context import RequestContext
from llmux.server.disconnect import read_body, replay

log = logging.getLogger(__name__)
SAFE = ("GET", "HEAD", "OPTIONS")
ADMIN_PREFIXES = ("/admin/", "/api/keys", "/api/blobs/")
ADMIN_PATHS = frozenset(
    ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/auth/setup",
     "/oauth2/token")
)  # fmt: skip
READS = ("/admin/audit", "/v1/audit")  # reading the trail is an action worth a record
TARGET_FIELDS = ("model", "name", "source", "destination", "client_id", "user", "role",
                 "scope", "scopes", "models", "period", "team")  # fmt: skip
MAX_TARGET_BODY = 64 * 1024
MAX_VALUE = 200


def is_admin(method: str, path: str) -> bool:
    if method in SAFE:
        return method == "GET" and path.startswith(READS)
    return path.startswith(ADMIN_PREFIXES) or path in ADMIN_PATHS


def route_match(scope: Scope) -> tuple[str, dict[str, str]]:
    """The route template a request is for and its path parameters (the path itself
    when no route has it)."""
    routes: list[Any] = getattr(getattr(scope.get("app"), "state", None), "routes", None) or []
    for route in routes:
        match, child = route.matches(scope)
        if match != Match.NONE:
            params = child.get("path_params", {})
            return str(route.path), {k: str(v)[:MAX_VALUE] for k, v in params.items()}
    return str(scope["path"]), {}


def body_fields(scope: Scope, body: bytes) -> dict[str, str]:
    """The :data:`TARGET_FIELDS` a JSON or form body names."""
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    data: Any
    try:
        if content_type.startswith(b"application/x-www-form-urlencoded"):
            data = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        else:
            data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for name in TARGET_FIELDS:
        value = data.get(name)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if isinstance(value, str | int) and not isinstance(value, bool):
            out[name] = str(value)[:MAX_VALUE]
    return out


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def error_code(body: bytes) -> str | None:
    """The ``code`` of an error reply in either shape, if it says."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code else None


class AuditLayer:
    def __init__(self, app: ASGIApp, *, admin: bool = True, wait: bool = False) -> None:
        self.app = app
        self.admin = admin
        self.wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trail: AuditTrail | None = getattr(
            getattr(scope["app"].state, "services", None), "audit", None
        )
        if trail is None or not (self.admin and is_admin(scope["method"], scope["path"])):
            await self.app(scope, receive, self._waiting(scope, send) if trail and self.wait
                           else send)  # fmt: skip
            return
        await Action(trail, scope, self.wait).run(self.app, receive, send)

    @staticmethod
    def _waiting(scope: Scope, send: Send) -> Send:
        """``send`` that holds every body message after the record is made until the
        record is on disk."""
        ctx = _ctx(scope)
        facts = ctx.facts if ctx is not None else {}

        async def waiting(message: Message) -> None:
            if message["type"] == "http.response.body" and SYNCED in facts:
                await asyncio.shield(facts.pop(SYNCED))
            await send(message)

        return waiting


def _ctx(scope: Scope) -> RequestContext | None:
    ctx = scope.get("state", {}).get("ctx")
    return ctx if isinstance(ctx, RequestContext) else None


class Action:
    """One administrative request, recorded when its response ends (or it fails)."""

    def __init__(self, trail: AuditTrail, scope: Scope, wait: bool) -> None:
        self.trail, self.scope, self.wait = trail, scope, wait
        self.template, self.target = route_match(scope)
        query = scope.get("query_string", b"")
        if query and scope["method"] == "GET":  # what was read of the trail
            self.target["query"] = query.decode("latin-1")[:MAX_VALUE]
        self.began = time.perf_counter()
        self.status = 0
        self.error_body = b""
        self.done = False

    async def run(self, app: ASGIApp, receive: Receive, send: Send) -> None:
        if self.template in ADMIN_PATHS or self.template.startswith(("/admin/", "/api/keys")):
            length = _content_length(self.scope)
            if length is not None and 0 < length <= MAX_TARGET_BODY:
                body = await read_body(receive)
                self.target = {**body_fields(self.scope, body), **self.target}
                receive = replay(body, receive)

        async def audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
            elif message["type"] == "http.response.body":
                if self.status >= 400 and len(self.error_body) < 4096:
                    self.error_body += message.get("body", b"")
                if not message.get("more_body") and not self.done:
                    await self._record(self.status, error_code(self.error_body))
            await send(message)

        try:
            await app(self.scope, receive, audited)
        except BaseException as exc:
            if not self.done:
                gone = isinstance(exc, asyncio.CancelledError)
                status = 499 if gone else int(getattr(exc, "status", 500))
                await self._record(status, None if gone else getattr(exc, "code", "internal_error"))
            raise

    async def _record(self, status: int, error: str | None) -> None:
        self.done = True
        ctx = _ctx(self.scope)
        p = ctx.principal if ctx is not None else None
        method = self.scope["method"]
        fields = {
            "kind": "admin",
            "request_id": ctx.request_id if ctx else "",
            "client_ip": ctx.client if ctx else None,
            "principal_kind": p.kind if p else "anonymous",
            "principal_id": p.id if p else None,
            "principal_name": p.name if p else "anonymous",
            "principal_user": p.user_id if p else None,
            "method": method,
            "route": self.template,
            "api": ctx.api if ctx else "",
            "operation": f"{method} {self.template}",
            "status": status,
            "error": error,
            "latency_us": int((time.perf_counter() - self.began) * 1e6),
            "target": self.target,
        }  # fmt: skip
        try:
            self.trail.record(ctx, fields)
        except Exception:  # the action is done; its record's failure is logged
            log.exception("audit: cannot record %s %s", method, self.template)
            return
        if self.wait and ctx is not None and SYNCED in ctx.facts:
            await asyncio.shield(ctx.facts.pop(SYNCED))
