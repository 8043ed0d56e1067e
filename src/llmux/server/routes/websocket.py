"""Chat over a WebSocket: one connection, many turns (see docs/api.md#websocket-chat).

``/api/chat/ws`` takes turns in Ollama's ``/api/chat`` shape, ``/v1/chat/completions/ws``
in OpenAI's chat-completions shape. The client sends ``{"turn": "t1", "request": {...}}``
(``turn`` optional; the server numbers turns otherwise) and may send
``{"cancel": "t1"}``. For each turn the server sends the streamed objects of that API
as ``{"turn": "t1", "chunk": {...}}``, then ``{"turn": "t1", "done": true}``; a failure
is ``{"turn": "t1", "status": 404, "error": ...}`` in the API's error shape, and a
cancelled turn ends with ``{"turn": "t1", "cancelled": true}``. Turns may overlap; the
connection closing cancels them. The same serving functions as the HTTP routes answer.
While the server drains (``server/drain.py``) a new turn gets a 503; running turns count
as requests in flight, and one cut at the end of the grace period ends with a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from llmux.core.context import RequestContext, new_request_id
from llmux.errors import InvalidRequest, LlmuxError, ServerBusy
from llmux.protocols.ollama.wire import ChatBody
from llmux.protocols.openai.wire import ChatCompletionBody
from llmux.server.body import describe
from llmux.server.drain import CUT, Drain
from llmux.server.errors import as_llmux_error, error_body
from llmux.server.identity import api_for
from llmux.services import Services
from llmux.serving import ollama as ollama_serving
from llmux.serving import openai as openai_serving
from llmux.serving.reply import Reply

router = APIRouter()
Shape = Literal["ollama", "openai"]
MAX_TURNS = 8  # turns one connection may have running at once


class Conversation:
    """One WebSocket connection and its running turns."""

    def __init__(self, ws: WebSocket, shape: Shape) -> None:
        self.ws = ws
        self.shape = shape
        self.path = "/api/chat" if shape == "ollama" else "/v1/chat/completions"
        services: Services = ws.app.state.services
        self.services = services
        self.drain: Drain = ws.app.state.drain
        found = ws.scope.get("state", {}).get("ctx")
        self.ctx = (
            found
            if isinstance(found, RequestContext)
            else RequestContext(api=api_for(ws.url.path), route=ws.url.path)
        )
        self.turns: dict[str, asyncio.Task[None]] = {}
        self.sending = asyncio.Lock()
        self.counter = 0

    async def send(self, message: dict[str, Any]) -> None:
        async with self.sending:
            await self.ws.send_json(message)

    async def run(self) -> None:
        await self.ws.accept()
        try:
            while True:
                message = await self.ws.receive_json()
                await self.handle(message)
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.turns.values():
                task.cancel()
            for task in list(self.turns.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            await self.fail(None, InvalidRequest("each message must be a JSON object"))
            return
        if "cancel" in message:
            task = self.turns.get(str(message["cancel"]))
            if task is not None:
                task.cancel()
            return
        self.counter += 1
        turn = str(message.get("turn") or self.counter)
        if turn in self.turns:
            await self.fail(turn, InvalidRequest(f"turn {turn!r} is still running"))
            return
        if len(self.turns) >= MAX_TURNS:
            await self.fail(turn, InvalidRequest(f"at most {MAX_TURNS} turns may run at once"))
            return
        request = message.get("request")
        if not isinstance(request, dict):
            await self.fail(turn, InvalidRequest('a turn needs "request": a chat request object'))
            return
        if self.drain.draining:
            await self.fail(turn, self.drain.refusal())
            return
        task = asyncio.create_task(self.turn(turn, request))
        self.turns[turn] = task
        self.drain.active.add(task)  # a turn is a request in flight
        task.add_done_callback(lambda _: self.turns.pop(turn, None))
        task.add_done_callback(self.drain.active.discard)

    async def turn(self, turn: str, request: dict[str, Any]) -> None:
        ctx = dataclasses.replace(self.ctx, request_id=new_request_id())
        try:
            reply = await self.serve(ctx, request)
            if reply.events is None:
                await self.send({"turn": turn, "chunk": reply.body})
            else:
                async for obj in reply.events:
                    await self.send({"turn": turn, "chunk": obj})
            await self.send({"turn": turn, "done": True})
        except asyncio.CancelledError:
            if self.drain.was_cut(asyncio.current_task()):
                await self.fail(turn, ServerBusy(CUT))
                return  # the turn ends here, as a failed one
            with contextlib.suppress(Exception):
                await self.send({"turn": turn, "cancelled": True})
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends the turn in the API's shape
            await self.fail(turn, as_llmux_error(exc, f"websocket turn on {self.path}"))

    async def serve(self, ctx: RequestContext, request: dict[str, Any]) -> Reply:
        gateway = self.services.gateway
        try:
            if self.shape == "ollama":
                body = ChatBody.model_validate({**request, "stream": True})
                return await ollama_serving.chat(gateway, ctx, body)
            oa = ChatCompletionBody.model_validate({**request, "stream": True})
            fields = self.ws.app.state.settings.server.reasoning_fields
            return await openai_serving.chat_completions(gateway, ctx, oa, fields)
        except ValidationError as exc:
            raise InvalidRequest(describe(exc)) from None

    async def fail(self, turn: str | None, error: LlmuxError) -> None:
        body = error_body(error, self.path)
        with contextlib.suppress(Exception):
            await self.send({"turn": turn, "status": error.status, **body})


@router.websocket("/api/chat/ws")
async def ollama_chat(ws: WebSocket) -> None:
    await Conversation(ws, "ollama").run()


@router.websocket("/v1/chat/completions/ws")
async def openai_chat(ws: WebSocket) -> None:
    await Conversation(ws, "openai").run()
