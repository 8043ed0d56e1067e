"""Request guard (pure ASGI): Host check, Origin check, body size limit.

* Host: only local host names, IP addresses and the names in ``[server] allowed_hosts``
  are accepted, so a web page cannot reach the server through DNS rebinding (a rebinding
  page's requests carry its own domain name as Host); 403, empty body, as Ollama. While
  bound to a loopback address the IP addresses must be loopback, private or unspecified;
  bound to ``0.0.0.0`` or a public address any IP address is accepted (clients reach the
  server by its address), and the bound name itself. ``allowed_hosts = ["*"]`` turns the
  check off.

Refusals other than the Host check are raised; the error boundary answers them.
* Origin: browsers' requests from origins outside the allow-list (Ollama's defaults
  plus ``origins`` from the settings, ``*`` wildcards allowed) are refused with 403
  and a message that says how to allow them. Same-origin requests always pass.
* Body: larger than ``max_body_bytes`` -> 413, by Content-Length or while reading
  (except blob uploads, ``/api/blobs/``, which stream to disk).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.errors import Forbidden, PayloadTooLarge

DEFAULT_ORIGINS = [
    f"{scheme}://{host}{port}"
    for scheme in ("http", "https")
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]

# bodies streamed to disk rather than held in memory: model blobs of many GB
STREAMED_PATHS = ("/api/blobs/",)
UPLOAD_PATHS = ("/v1/files",)  # [batch] max_file_bytes, not max_body_bytes (plus the form's own)
FORM_SLACK = 1024 * 1024


def origin_regex(patterns: Iterable[str]) -> str:
    """One regex for the allowed origins. ``*`` matches anything, except as the port
    (``http://localhost:*``), where it matches digits only: ``http://localhost:3000.evil.com``
    is another host, not a port of localhost."""
    parts = []
    for pattern in patterns:
        escaped = re.escape(pattern.rstrip("/"))
        port = escaped.endswith(r":\*")
        if port:
            escaped = escaped[: -len(r":\*")]
        parts.append(escaped.replace(r"\*", ".*") + (r"(:[0-9]+)?" if port else ""))
    return "^(" + "|".join(parts) + ")$"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name in a Host header, lower-case, without its port or IPv6 brackets."""
    name = host.lower().strip()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else name
    if name.count(":") == 1:
        return name.split(":", 1)[0]
    return name


def local_host_allowed(host: str, *, any_ip: bool = False) -> bool:
    name = host_name(host)
    if name in ("localhost", socket.gethostname().lower()) or name.endswith(
        (".localhost", ".local", ".internal")
    ):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return any_ip or ip.is_loopback or ip.is_private or ip.is_unspecified


class HostCheck:
    """Which ``Host`` headers are accepted: local names and addresses, ``allowed``
    (names, ``*`` wildcards, e.g. ``*.example.com``; ``*`` alone accepts every host),
    and on a non-loopback bind any IP address and the bound name."""

    def __init__(self, allowed: Iterable[str] = (), *, bind_host: str = "127.0.0.1") -> None:
        names = [host_name(a) for a in allowed if a.strip()]
        self.off = "*" in names
        self.public = not is_loopback(bind_host)
        if self.public and bind_host.strip("[]") not in ("0.0.0.0", "::"):
            names.append(host_name(bind_host))
        parts = [re.escape(n).replace(r"\*", "[^:/]*") for n in names]
        self.names = re.compile("^(" + "|".join(parts) + ")$") if parts else None

    def __call__(self, host: str) -> bool:
        if self.off or local_host_allowed(host, any_ip=self.public):
            return True
        return bool(self.names and self.names.match(host_name(host)))


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: list[str],
        hosts: HostCheck,
        max_body: int,
        max_upload: int = 0,
    ) -> None:
        self.app = app
        self.origin_re = re.compile(origin_regex([*DEFAULT_ORIGINS, *origins]))
        self.hosts = hosts
        self.max_body = max_body
        self.max_upload = max(max_body, max_upload + FORM_SLACK)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.hosts(host):
            await _send(send, 403, b"")
            return
        origin = headers.get("origin")
        if origin and not self._origin_ok(origin, host, scope):
            raise Forbidden(
                f"origin {origin} is not allowed; add it to LLMUX_SERVER__ORIGINS (comma-separated,"
                " wildcards allowed, e.g. chrome-extension://*) or to `origins` in the [server]"
                " table of the config file"
            )
        if scope["path"].startswith(STREAMED_PATHS):  # written to disk as it arrives
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if scope["path"] in UPLOAD_PATHS else self.max_body
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {limit} bytes"
            )
        await self.app(scope, self._limited(receive, limit), send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The same Host and Origin rules for WebSocket handshakes (a page on another
        origin must not open one); a refused handshake is closed before it is accepted,
        which the server answers with 403."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        origin = headers.get("origin")
        if self.hosts(host) and (not origin or self._origin_ok(origin, host, scope)):
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})

    def _origin_ok(self, origin: str, host: str, scope: Scope) -> bool:
        if origin.rstrip("/") in (f"http://{host}", f"https://{host}"):
            return True
        return bool(self.origin_re.match(origin.rstrip("/")))

    def _limited(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        return wrapped


async def _send(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
