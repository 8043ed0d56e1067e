"""Where the server is: the ``host`` argument, else ``LLMUX_HOST``, else the default."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
WILDCARDS = {"0.0.0.0", "::", ""}


def base_url(host: str | None = None) -> str:
    """``host``, ``host:port``, ``:port``, ``[v6]:port`` or a full URL -> ``scheme://host:port[/path]``.

    Without ``host``, ``LLMUX_HOST`` is read; a wildcard bind address (``0.0.0.0``) means
    this machine, as a server started with ``LLMUX_HOST=0.0.0.0`` is reached on loopback.
    """
    text = (host if host is not None else os.environ.get("LLMUX_HOST", "")).strip()
    if not text:
        return f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    if "://" not in text:
        text = "http://" + (DEFAULT_HOST + text if text.startswith(":") else text)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"host {host!r}: only http and https URLs are supported")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"invalid port in host {text!r}; use host:port, e.g. 127.0.0.1:11434"
        ) from exc
    if port is None:
        port = 443 if parts.scheme == "https" else DEFAULT_PORT
    name = parts.hostname or DEFAULT_HOST
    if name in WILDCARDS:
        name = DEFAULT_HOST
    if ":" in name:
        name = f"[{name}]"
    return f"{parts.scheme}://{name}:{port}{parts.path.rstrip('/')}"
