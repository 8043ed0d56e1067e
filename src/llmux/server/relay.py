"""ASGI middleware for requests that upstream servers answer: the fast path, and
keep-alives while an upstream has not produced its first token.

* **Fast path**: when the client speaks the upstream's own API (Ollama native to an
  Ollama-type upstream, OpenAI/DeepSeek to an OpenAI-type one), no configured policy
  needs bodies, and the engine does not serve the name too (``Route.fast``), the
  request body is sent on as it came (only its ``model`` field rewritten where the
  upstream knows the model by another name) and the reply's bytes are relayed as they
  arrive, unparsed (``"model"`` fields rewritten back). Retries, failover, breakers and
  load balancing apply as on the translating path (:class:`llmux.upstream.pool.Pool`),
  and the bytes pass through the gateway's policy chain (``Gateway.relay``), which reads
  the usage from the reply's end; an OpenAI stream that did not ask for the usage chunk
  gets one requested and filtered out again while policies are configured.
* **Keep-alive**: a streaming request whose first token has not come after
  ``[gateway] keepalive_s`` gets a 200 and then, every ``keepalive_s``, an SSE
  ``: keep-alive`` comment or, for NDJSON, one space: JSON allows whitespace before a
  value, so the Ollama clients read the first line as before. An error after that is
  sent as the stream's last line/event in the API's error shape.

Everything else passes straight to the app. Errors raised here (a body over the size
limit, say) are answered by the error boundary outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmux.core.context import RequestContext
from llmux.errors import InvalidRequest, LlmuxError, UpstreamError
from llmux.gateway import Gateway
from llmux.server.body import loads
from llmux.server.disconnect import read_body, replay, until_disconnect
from llmux.server.errors import stream_error
from llmux.upstream.pool import Member, Pool, Target
from llmux.upstream.server import Upstream

OLLAMA_PATHS = {"/api/chat", "/api/generate"}
OPENAI_PATHS = {"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"}
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


@dataclass(slots=True)
class Plan:
    path: str
    api: str  # "ollama" or "openai"
    name: str  # the exposed name
    asked: str  # the model field as the client wrote it
    stream: bool
    body: bytes
    obj: dict[str, Any]
    fast: list[Target]
    strip_usage: bool = False  # include_usage was added for the policies' sake
    bodies: dict[str, bytes] = field(default_factory=dict)  # upstream model -> payload

    @property
    def content_type(self) -> str:
        return NDJSON if self.api == "ollama" else SSE

    @property
    def max_output(self) -> int | None:
        """The output cap the body asks for (quotas reserve it)."""
        options = self.obj.get("options")
        for value in (
            self.obj.get("max_completion_tokens"),
            self.obj.get("max_tokens"),
            options.get("num_predict") if isinstance(options, dict) else None,
        ):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    @property
    def choices(self) -> int:
        n = self.obj.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    @property
    def keepalive(self) -> bytes:
        return b" " if self.api == "ollama" else b": keep-alive\n\n"

    def error_bytes(self, exc: LlmuxError) -> bytes:
        return stream_error(exc, self.path, self.content_type)

    def payload(self, model: str) -> bytes:
        """The body for a member that knows the model as ``model``."""
        if model == self.asked and not self.strip_usage:
            return self.body
        if model not in self.bodies:
            obj = {**self.obj, "model": model}
            if self.strip_usage:
                obj["stream_options"] = {**(obj.get("stream_options") or {}), "include_usage": True}
            self.bodies[model] = json.dumps(obj, ensure_ascii=False).encode()
        return self.bodies[model]


class StartedError(Exception):
    """An error for a response that has already started (keep-alives were sent)."""

    def __init__(self, error: LlmuxError) -> None:
        super().__init__(error.message)
        self.error = error


def plan(gw: Gateway, path: str, body: bytes) -> Plan | None:
    try:
        obj = loads(body)  # the body parser's rules: what it refuses, the route answers
        model = obj.get("model") if isinstance(obj, dict) else None
        if not isinstance(model, str) or not model.strip():
            return None
        route = gw.route(model)
    except (ValueError, RecursionError, InvalidRequest):
        return None  # the route answers with the proper error
    if not route.upstream:
        return None
    api = "ollama" if path in OLLAMA_PATHS else "openai"
    stream = obj.get("stream", api == "ollama") is not False
    fast = [] if gw.needs_bodies else route.fast(api)
    p = Plan(path, api, route.name, model, stream, body, obj, fast)
    if fast and api == "openai" and stream and gw.policies:
        options = obj.get("stream_options")
        p.strip_usage = not (isinstance(options, dict) and options.get("include_usage"))
    return p


def renamed(data: bytes, remote: str, asked: str) -> bytes:
    """``"model"`` fields naming the upstream's model, renamed to what the client asked
    for (a field split across two reads keeps the upstream's name)."""
    for sep in (b":", b": "):
        old = b'"model"' + sep + json.dumps(remote).encode()
        if old in data:
            data = data.replace(
                old, b'"model"' + sep + json.dumps(asked, ensure_ascii=False).encode()
            )
    return data


def whole_reply(body: bytes, *, delimited: bool) -> bool:
    """Whether a non-streaming reply arrived whole: something besides whitespace and SSE
    comments, and, when the upstream did not say how long it is (no Content-Length, not
    chunked), a JSON document that parses."""
    text = body.strip()
    if not text or all(not line.strip() or line.startswith(b":") for line in text.splitlines()):
        return False
    if delimited:
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class StreamEnd:
    """Whether a relayed stream ended as the API ends one: ``data: [DONE]`` (SSE) or a
    last line with ``"done": true`` (NDJSON). Only a short tail is kept."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.tail = b""

    def see(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-512:]

    def complete(self) -> bool:
        """Ended as the API ends a stream, or with the upstream's own error."""
        sep = b"\n\n" if self.api == "openai" else b"\n"
        last = self.tail.rstrip().rsplit(sep, 1)[-1].replace(b" ", b"")
        if self.api == "openai":
            return last in (b"data:[DONE]",) or last.startswith(b'data:{"error"')
        return b'"done":true' in last or last.startswith(b'{"error"')


class UsageFilter:
    """Drops the usage-only SSE event (``"choices":[]`` with ``usage``) that was asked
    for on the client's behalf; the meter has seen it by then."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        self.pending += data
        *events, self.pending = self.pending.split(b"\n\n")
        kept = [e for e in events if not _usage_only(e)]
        return b"".join(e + b"\n\n" for e in kept)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return b"" if _usage_only(rest) else rest


def _usage_only(event: bytes) -> bool:
    return b'"usage"' in event and (b'"choices":[]' in event or b'"choices": []' in event)


def start_message(content_type: str, status: int = 200, length: int | None = None) -> Message:
    headers = [(b"content-type", content_type.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if content_type.startswith(SSE):
        headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
    return {"type": "http.response.start", "status": status, "headers": headers}


def body_message(data: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class Relay:
    def __init__(self, app: ASGIApp, keepalive_s: float = 10.0) -> None:
        self.app = app
        self.keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (path not in OLLAMA_PATHS and path not in OPENAI_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        gw: Gateway | None = getattr(services, "gateway", None)
        if gw is None or not gw.upstreams.upstreams:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        p = plan(gw, path, body)
        if p is None:
            await self.app(scope, replay(body, receive), send)
        elif p.fast:
            await until_disconnect(self._fast(gw, p, scope, receive, send), receive)
        elif p.stream and self.keepalive_s > 0:
            await self._kept_alive(p, scope, replay(body, receive), send)
        else:
            await self.app(scope, replay(body, receive), send)

    async def _fast(self, gw: Gateway, p: Plan, scope: Scope, receive: Receive, send: Send) -> None:
        meta: dict[str, str] = {}
        upstream_path = p.path if p.api == "ollama" else p.path.removeprefix("/v1")

        def start(m: Member, model: str, deadline: float) -> AsyncIterator[bytes]:
            ctx.facts["upstream"] = m.name  # the last one tried answers
            chunks = cast(Upstream, m).relay(upstream_path, p.payload(model), model, deadline, meta)
            return chunks if model == p.asked else _renamed(chunks, model, p.asked)

        ctx = scope.get("state", {}).get("ctx") or RequestContext(api=p.api, route=p.path)  # type: ignore[arg-type]
        ctx.facts["body"], ctx.facts["model"] = p.body, p.asked  # for the audit trail
        stream = gw.relay(
            ctx, p.name, p.stream, Pool(p.name, p.fast).stream(start),
            body_size=len(p.body), max_output=p.max_output, choices=p.choices,
        )  # fmt: skip
        try:
            if p.stream:
                await self._fast_stream(stream, p, meta, send)
            else:
                await self._fast_whole(stream, p, meta, send)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def _fast_whole(
        self, stream: AsyncIterator[bytes], p: Plan, meta: dict[str, str], send: Send
    ) -> None:
        """A non-streaming reply, sent once it has all arrived: one that breaks off, or
        ends with nothing but whitespace or keep-alive comments, is a 502 in the API's
        shape instead of a 200 with a broken body."""
        body = b"".join([data async for data in stream])
        if not whole_reply(body, delimited=meta.get("delimited") == "yes"):
            raise UpstreamError(
                f"the upstream serving '{p.name}' ended the reply without a complete body"
            )
        await send(start_message(meta.get("content_type", "application/json"), length=len(body)))
        await send(body_message(body, more=False))

    async def _fast_stream(
        self, stream: AsyncIterator[bytes], p: Plan, meta: dict[str, str], send: Send
    ) -> None:
        started = False
        try:
            if self.keepalive_s > 0:
                first, started = await self._first_kept_alive(stream, p, send)
            else:
                first = await anext(stream)
        except StartedError as wrapped:
            await send(body_message(p.error_bytes(wrapped.error), more=False))
            return
        usage = UsageFilter() if p.strip_usage else None
        ending = StreamEnd(p.api)
        if not started:
            await send(start_message(meta.get("content_type", p.content_type)))
        ending.see(first)
        await send(body_message(usage.feed(first) if usage else first))
        try:
            async for data in stream:
                ending.see(data)
                await send(body_message(usage.feed(data) if usage else data))
        except LlmuxError as exc:
            await send(body_message(p.error_bytes(exc), more=False))
            return
        tail = usage.flush() if usage else b""
        if not ending.complete():
            early = UpstreamError(
                f"the upstream serving '{p.name}' ended the stream before the reply was done"
            )
            tail += p.error_bytes(early)
        await send(body_message(tail, more=False))

    async def _first_kept_alive(
        self, stream: AsyncIterator[bytes], p: Plan, send: Send
    ) -> tuple[bytes, bool]:
        """The stream's first bytes; while they have not come, keep-alives. The second
        value says whether the response has started."""
        opened = asyncio.ensure_future(anext(stream))
        started = False
        try:
            while not opened.done():
                await asyncio.wait({opened}, timeout=self.keepalive_s)
                if not opened.done():
                    if not started:
                        await send(start_message(p.content_type))
                        started = True
                    await send(body_message(p.keepalive))
        finally:
            if not opened.done():
                opened.cancel()
        try:
            first = opened.result()
        except LlmuxError as exc:
            raise StartedError(exc) if started else exc from None
        return first, started

    async def _kept_alive(self, p: Plan, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; if it has not started its reply after ``keepalive_s``, start a
        200 ourselves, send keep-alives, and fold the app's reply into that stream."""
        lock = asyncio.Lock()
        app_started = asyncio.Event()
        state: dict[str, Any] = {"ours": False, "status": 200, "error": b""}

        async def app_send(message: Message) -> None:
            async with lock:
                if message["type"] == "http.response.start":
                    state["status"] = message["status"]
                    app_started.set()
                    if not state["ours"]:
                        await send(message)
                    return
                if not state["ours"] or state["status"] < 300:
                    await send(message)
                    return
                state["error"] += message.get("body", b"")  # an error reply, as a last line
                if not message.get("more_body"):
                    await send(body_message(self._error_line(p, state["error"]), more=False))

        task = asyncio.ensure_future(self.app(scope, receive, app_send))
        try:
            while not task.done() and not app_started.is_set():
                waiter = asyncio.ensure_future(app_started.wait())
                await asyncio.wait(
                    {task, waiter}, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                async with lock:
                    if not app_started.is_set() and not task.done():
                        if not state["ours"]:
                            state["ours"] = True
                            await send(start_message(p.content_type))
                        await send(body_message(p.keepalive))
            await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @staticmethod
    def _error_line(p: Plan, body: bytes) -> bytes:
        text = body.strip()
        return text + b"\n" if p.api == "ollama" else b"data: " + text + b"\n\n"


async def _renamed(chunks: AsyncIterator[bytes], remote: str, asked: str) -> AsyncIterator[bytes]:
    try:
        async for data in chunks:
            yield renamed(data, remote, asked)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
