"""The identity layer (pure ASGI, outermost but for CORS): one
:class:`~llmux.core.context.RequestContext` per request, in ``scope["state"]["ctx"]``.

* **Request id**: the client's ``X-Request-Id`` when it is a sane token (1-128 of
  ``A-Z a-z 0-9 . _ : -``), else a new one; returned as ``X-Request-Id`` on every
  response and attached to every log record of the request.
* **Client address**: the peer's address. Only when the peer is one of the configured
  ``[server] trusted_proxies`` (addresses or CIDR ranges) is ``X-Forwarded-For`` read:
  from its right end, the first address that is not a trusted proxy is the client.
* **API**: ``ollama`` for ``/`` and ``/api/*``, ``openai`` for ``/v1/*``, ``deepseek``
  for the bare root (DeepSeek-style paths); the route is the request path.
* **Cache-Control**: the request's header, as ``ctx.cache_control`` (its first
  :data:`MAX_CACHE_CONTROL` characters), for the response cache.
* **Trace context**: a W3C ``traceparent`` header goes into ``ctx.facts["traceparent"]``,
  the parent of the request's span when tracing is on (``observability/tracing.py``).
* **Principal**: anonymous; access control fills it in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.core.context import Api, RequestContext, new_request_id
from llmux.observability.logs import REQUEST_ID
from llmux.server.errors import is_ollama_path

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_CACHE_CONTROL = 256  # what is kept of a Cache-Control header (the response cache reads it)
MAX_TRACEPARENT = 128  # ... of a W3C traceparent header (55 characters in version 00)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def api_for(path: str) -> Api:
    if is_ollama_path(path):
        return "ollama"
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    return "deepseek"


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse ``trusted_proxies``; a bad entry is a ValueError naming it."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted_proxies: {entry!r} is not an address or CIDR range"
            ) from None
    return tuple(out)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(
    peer: str | None, forwarded: str | None, proxies: tuple[Network, ...]
) -> str | None:
    if peer is None or not forwarded or not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


class Identity:
    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.proxies = networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = forwarded = traceparent = None
        cache_control = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                given = value.decode("latin-1")
            elif key == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            elif key == b"cache-control":
                cache_control = value[:MAX_CACHE_CONTROL].decode("latin-1")
            elif key == b"traceparent":
                traceparent = value[:MAX_TRACEPARENT].decode("latin-1")
        request_id = given if given and _REQUEST_ID.match(given) else new_request_id()
        client = scope.get("client")
        peer = client[0] if client else None
        path = scope["path"]
        if forwarded is not None and self.proxies:
            peer = client_address(peer, forwarded, self.proxies)
        ctx = RequestContext(api_for(path), path, request_id, peer, cache_control=cache_control)
        if traceparent:
            ctx.facts["traceparent"] = traceparent
        scope.setdefault("state", {})["ctx"] = ctx
        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, _WithId(send, request_id.encode(), ctx.headers))
        finally:
            REQUEST_ID.reset(token)


class _WithId:
    """``send`` that adds ``X-Request-Id``, and the headers policies put in the
    context, to the response's start."""

    __slots__ = ("extra", "header", "send")

    def __init__(self, send: Send, request_id: bytes, extra: dict[str, str]) -> None:
        self.send = send
        self.header = (b"x-request-id", request_id)
        self.extra = extra  # the context's headers: filled while the request runs

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), self.header]
            if self.extra:
                have = {k.lower() for k, _ in headers}
                headers += [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in self.extra.items()
                    if k.encode("latin-1") not in have
                ]
            message = {**message, "headers": headers}
        await self.send(message)
