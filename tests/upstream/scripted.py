"""A scripted upstream that injects faults and odd formats, speaking both Ollama's
native API and the OpenAI API on loopback. It runs on its own thread and event loop;
the model name in each request picks the behaviour:

``think-*``  ``<think>`` text before the answer      ``flaky-*``  429 (Retry-After: 1) every other call
``tool-*``   one tool call (fragments on OpenAI)      ``fail``     always 500
``slow``     3 s before any byte                      ``lazy``     1 s before the first token
``garbage``  200 with a body that is not JSON         ``drop``     one token, then the connection drops
``reset``    the connection closes with no reply      ``brk``      500 while ``fail_brk`` is set
``broke``    402 Insufficient Balance (DeepSeek)       ``busy``     503 with Retry-After: 1
``tired``    422 with an OpenAI error body             ``cut``      a body without a length, cut
``nochunk``  SSE without chunking, cut after 2 events  ``comments`` keep-alive comments, then closes
``held-*``   300 ms per call; :attr:`Scripted.peak` counts how many ran at once
``paced-*``  20 ms per call (a quick model that still takes a moment)
:attr:`Scripted.asked` counts the calls per text of the last message, for every model;
anything else: a short normal answer ("ok from scripted").
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

from aiohttp import web

HELD = web.RequestKey("held", bool)  # the call is past its 300 ms hold
THINK = ["<think>", "Two plus ", "two.", "</think>", "\n\nThe answer", " is 4."]


class Scripted:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.asked: Counter[str] = Counter()  # calls per last message's text
        self.fail_brk = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Scripted:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/chat", self.ollama)
        app.router.add_post("/api/generate", self.ollama)
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/v1/models", self.models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "scripted:latest", "size": 1}]})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "scripted", "created": 1}]})

    async def _fault(self, request: web.Request, model: str) -> web.StreamResponse | None:
        """A fault reply for this call, or None to answer normally."""
        self.hits[model] += 1
        messages = (await request.json()).get("messages") or [{}]
        self.asked[str(messages[-1].get("content"))] += 1
        if model.startswith("paced"):
            await asyncio.sleep(0.02)
        if model.startswith("flaky") and self.hits[model] % 2 == 1:
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": "1"}
            )
        if model == "fail" or (model == "brk" and self.fail_brk):
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if model == "slow":
            await asyncio.sleep(3)
        if model == "garbage":
            return web.Response(text="this is not json\n", content_type="application/x-ndjson")
        if model == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if model == "broke":
            error = {"message": "Insufficient Balance", "type": "unknown_error", "code": None}
            return web.json_response({"error": error}, status=402)
        if model == "busy":
            return web.json_response(
                {"error": {"message": "Server overloaded"}},
                status=503,
                headers={"Retry-After": "1"},
            )
        if model == "tired":
            return web.json_response({"error": {"message": "bad field foo"}}, status=422)
        if model.removesuffix("-ol") in ("cut", "nochunk", "comments"):
            return await self._raw(request, model.removesuffix("-ol"))
        return None

    async def _raw(self, request: web.Request, model: str) -> web.StreamResponse:
        """Replies written straight to the socket: close-delimited bodies cut short."""
        assert request.transport is not None
        body = await request.json()
        sse = bool(body.get("stream", request.path.startswith("/api")))
        kind = (
            b"text/event-stream"
            if sse and not request.path.startswith("/api")
            else (b"application/x-ndjson" if sse else b"application/json")
        )
        head = b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nConnection: close\r\n\r\n"
        if model == "cut":
            payload = b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "mess'
        elif model == "nochunk":
            if kind == b"application/x-ndjson":
                payload = b'{"model":"nochunk","message":{"role":"assistant","content":"a"},"done":false}\n'
            else:
                event = {"id": "x", "object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}  # fmt: skip
                payload = b"data: " + json.dumps(event).encode() + b"\n\n"
                payload += payload
        else:
            payload = b": keep-alive\n\n: keep-alive\n\n"
        request.transport.write(head + payload)
        await asyncio.sleep(0.05)
        request.transport.close()
        return web.Response()

    def _tokens(self, model: str) -> list[str]:
        if model.startswith("think"):
            return THINK
        return ["ok", " from", " scripted"]

    async def _held(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Answer after 300 ms, counting the calls that run at once."""
        model = (await request.json())["model"]
        request[HELD] = True
        self.running[model] += 1
        self.peak[model] = max(self.peak[model], self.running[model])
        try:
            await asyncio.sleep(0.3)
            reply: web.StreamResponse = await handler(request)
            return reply
        finally:
            self.running[model] -= 1

    async def ollama(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["model"].startswith("held") and not request.get(HELD):
            return await self._held(request, self.ollama)
        model = body["model"]
        self.bodies[model] = body
        fault = await self._fault(request, model)
        if fault is not None:
            return fault
        key = "message" if request.path == "/api/chat" else "response"
        if body.get("stream") is False:  # the fast path relays the client's own flag
            text = "".join(self._tokens(model))
            part: Any = {"role": "assistant", "content": text} if key == "message" else text
            return web.json_response(
                {"model": model, key: part, "done": True, "done_reason": "stop", "eval_count": 3}
            )
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        if model == "lazy":
            await asyncio.sleep(1)

        def line(text: str, **extra: Any) -> bytes:
            part: Any = {"role": "assistant", "content": text} if key == "message" else text
            if key == "message" and "tool_calls" in extra:
                part["tool_calls"] = extra.pop("tool_calls")
            return (json.dumps({"model": model, key: part, **extra}) + "\n").encode()

        if model.startswith("tool"):
            call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            await resp.write(line("", done=False, tool_calls=[call]))
        else:
            for i, tok in enumerate(self._tokens(model)):
                await resp.write(line(tok, done=False))
                if model == "drop" and i == 0:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
        await resp.write(
            line(
                "",
                done=True,
                done_reason="stop",
                prompt_eval_count=5,
                eval_count=3,
                total_duration=1000,
                eval_duration=500,
            )
        )
        await resp.write_eof()
        return resp

    async def openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["model"].startswith("held") and not request.get(HELD):
            return await self._held(request, self.openai)
        model = body["model"]
        self.bodies[model] = body
        fault = await self._fault(request, model)
        if fault is not None:
            return fault
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(self._tokens(model))}
            return web.json_response(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": keep-alive\n\n")
        if model == "lazy":
            await asyncio.sleep(1)

        async def event(delta: dict[str, Any], finish: str | None = None) -> None:
            obj = {
                "id": "x",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())

        await event({"role": "assistant", "content": ""})
        if model.startswith("tool"):
            await event(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            )
            for piece in ('{"city"', ': "Par', 'is"}'):
                await event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            await event({}, "tool_calls")
        else:
            for i, tok in enumerate(self._tokens(model)):
                await event({"content": tok})
                if model == "drop" and i == 0:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
            await event({}, "stop")
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
