"""What the access layer costs per request, in process: the ASGI middleware of
``server/access.py`` in front of an app that does nothing, against that app alone, with
a real API key checked by a real AccessControl on SQLite (the cached path, as in
production once the key has been seen).

    .venv/bin/python bench/access_layer.py [--requests 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from llmux.config import Settings
from llmux.core.context import RequestContext
from llmux.server.access import Access
from llmux.services import access_control
from llmux.storage.database import Database, database_url

PATH = "/v1/chat/completions"


async def main(n: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="llmux-bench-access-"))
    settings = Settings(home=home, auth={"mode": "on", "cache_s": 60})
    db = Database(database_url(None, home))
    await db.open()
    control = access_control(settings, db)
    user = await control.add_user("bench", "bench password", "user")
    _, key = await control.create_key(user)
    app = FastAPI()

    @app.post(PATH)
    async def chat() -> dict[str, Any]:
        return {}

    app.state.routes = list(app.router.routes)
    app.state.services = type("Services", (), {"access": control})()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    layer = Access(inner)
    headers = [
        (b"host", b"127.0.0.1:11434"),
        (b"user-agent", b"bench"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-length", b"120"),
    ]

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "POST", "path": PATH, "headers": headers, "app": app,
                "state": {"ctx": RequestContext("openai", PATH)}, "query_string": b""}  # fmt: skip

    for _ in range(1000):  # warm: the key verified once, the route found once
        await layer(scope(), None, None)
    started = time.perf_counter()
    for _ in range(n):
        await layer(scope(), None, None)
    with_layer = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n):
        await inner(scope(), None, None)
    alone = time.perf_counter() - started
    await db.aclose()
    print(
        f"{n} requests: app alone {alone / n * 1e6:.1f} us, with the access layer "
        f"{with_layer / n * 1e6:.1f} us; the layer adds {(with_layer - alone) / n * 1e6:.1f} us "
        f"per request ({with_layer / alone:.1f}x the empty app)"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50_000)
    asyncio.run(main(ap.parse_args().requests))
