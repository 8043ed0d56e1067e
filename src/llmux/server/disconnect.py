"""Watching for the client to go away, from the moment a model request is accepted.

Starlette notices a disconnect only while it streams a response; a request still
waiting in the engine's queue, or a non-streaming one being generated, would run to the
end for nobody. :class:`DisconnectWatch` (pure ASGI, just inside the relay) reads the
body of every request that reaches a model, hands it to the app, and listens on the
connection meanwhile: when the client hangs up, the app's task is cancelled, which
closes the reply's stream, which cancels the engine's job (dropped from the queue, or
stopped at the next decode step) or the upstream call. The app still sees the
disconnect through ``receive`` as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.core.context import RequestContext

MODEL_PATHS = {
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/beta/chat/completions",
    "/beta/completions",
    "/v1/text/completion",
    "/text/completion",
}


def reaches_a_model(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    if path in MODEL_PATHS:
        return True
    return path.startswith("/api/conversations/") and path.endswith(("/messages", "/regenerate"))


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(parts)


def replay(body: bytes, then: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then whatever ``then`` gives."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return again


async def until_disconnect(work: Awaitable[None], receive: Receive) -> bool:
    """Run ``work`` in this task; cancel it if the client goes away first (True then).
    ``work`` must not read ``receive`` itself. One watcher task per request: this runs
    on every request that reaches a model, the relay's fast path included."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                current.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from outside (shutdown): not ours to swallow
        current.uncancel()
        return True
    finally:
        if not watcher.done():
            watcher.cancel()
    return False


class DisconnectWatch:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not reaches_a_model(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        ctx = scope.get("state", {}).get("ctx")
        if isinstance(ctx, RequestContext):
            ctx.facts["body"] = body  # the audit trail's prompt hash is over it
        gone = asyncio.Event()

        async def after_body() -> Message:  # the watcher below reads the connection
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watched() -> None:
            try:
                await self.app(scope, replay(body, after_body), send)
            finally:
                gone.set()

        async def real_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            return message

        await until_disconnect(watched(), real_receive)
