"""Conversation turns: history assembled on the server, replies streamed and stored.

:class:`ChatHistory` sits beside the :class:`~llmux.gateway.Gateway`. A turn stores the
user's message, builds the request from the conversation's system prompt and every
stored message, streams the reply through the gateway (policies included) and stores
it when it ends. A reply cut short (client gone, stop pressed, model failure) is stored
with what was generated, marked ``partial``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from llmux.core.chunks import ChatChunk
from llmux.core.context import Principal, RequestContext
from llmux.core.conversations import (
    Conversation,
    ConversationNotFound,
    ConversationRepository,
    NewMessage,
    StoredMessage,
)
from llmux.core.request import ChatRequest
from llmux.errors import InvalidRequest
from llmux.gateway import Gateway
from llmux.protocols.conversations import MessageBody, ReplyBody, title_from
from llmux.protocols.ollama import convert
from llmux.protocols.ollama.wire import ChatBody, WireMessage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Turn:
    """One reply being generated; ``message_id`` is set once it is stored."""

    conversation_id: str
    model: str
    chunks: AsyncIterator[ChatChunk] = field(init=False)
    message_id: int | None = None
    store_error: str | None = None  # why the finished reply could not be stored
    scrub: Callable[[str], str] = field(default=lambda text: text, repr=False)


def owner_of(principal: Principal) -> str | None:
    """Who owns what ``principal`` makes: its user, else the principal itself (a token
    from an identity provider); None while access control is off."""
    if principal.anonymous:
        return None
    return principal.user_id or f"{principal.kind}:{principal.id}"


class ChatHistory:
    """Conversations belong to the principal that made them: each caller sees, searches,
    changes and exports only its own (another's is "not found"); admins see all only
    with ``admins_see_all``. With access control off everyone is the same anonymous
    caller and sees everything."""

    def __init__(
        self,
        repo: ConversationRepository,
        gateway: Gateway,
        *,
        admins_see_all: bool = False,
        scrub: Callable[[RequestContext], Callable[[str], str] | None] | None = None,
    ) -> None:
        self.repo = repo
        self.gateway = gateway
        self.admins_see_all = admins_see_all
        self.scrub = scrub  # what stored text passes through (PII redaction), per caller

    def _scrubber(self, ctx: RequestContext) -> Callable[[str], str]:
        found = self.scrub(ctx) if self.scrub is not None else None
        return found if found is not None else _same

    def scope(self, ctx: RequestContext) -> str | None:
        """The owner whose conversations ``ctx`` sees, or None for all of them."""
        p = ctx.principal
        if p.anonymous or (self.admins_see_all and p.admin):
            return None
        return owner_of(p)

    async def conversation(self, ctx: RequestContext, conversation_id: str) -> Conversation:
        conv = await self.repo.get(conversation_id)
        owner = self.scope(ctx)
        if owner is not None and conv.owner != owner:
            raise ConversationNotFound(conversation_id)
        return conv

    async def create(
        self, ctx: RequestContext, *, title: str = "", model: str = "", system: str = ""
    ) -> Conversation:
        return await self.repo.create(
            title=title, model=model, system=system, owner=owner_of(ctx.principal)
        )

    async def find(
        self, ctx: RequestContext, *, query: str = "", limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        return await self.repo.find(query=query, limit=limit, offset=offset, owner=self.scope(ctx))

    async def send(self, ctx: RequestContext, conversation_id: str, body: MessageBody) -> Turn:
        conv = await self.conversation(ctx, conversation_id)
        model = self._model(conv, body)
        history = await self.repo.messages(conversation_id)
        wire = [*self._wire_history(conv, history)]
        wire.append(WireMessage(role="user", content=body.content, images=body.images))
        request = self._request(model, wire, body)  # bad options fail before anything is stored
        content = self._scrubber(ctx)(body.content)
        await self.repo.append(
            conversation_id,
            NewMessage(role="user", content=content, model=model),
            title_if_empty=title_from(content),
        )
        return await self._start(ctx, conv, model, request)

    async def regenerate(self, ctx: RequestContext, conversation_id: str, body: ReplyBody) -> Turn:
        conv = await self.conversation(ctx, conversation_id)
        model = self._model(conv, body)
        history = await self.repo.messages(conversation_id)
        last = history[-1] if history else None
        if last is not None and last.role == "assistant":
            history = history[:-1]
        if not history or history[-1].role != "user":
            raise InvalidRequest("nothing to regenerate: the conversation has no user message")
        request = self._request(model, list(self._wire_history(conv, history)), body)
        if last is not None and last.role == "assistant":
            await self.repo.delete_message(conversation_id, last.id)
        return await self._start(ctx, conv, model, request)

    def _model(self, conv: Conversation, body: ReplyBody) -> str:
        name = body.model or conv.model
        if not name:
            raise InvalidRequest(
                "no model: pass `model`, or set one on the conversation", param="model"
            )
        resolved = self.gateway.resolve_name(name)
        self.gateway.require_model(resolved)  # unknown model: 404 before anything is stored
        return resolved

    @staticmethod
    def _wire_history(conv: Conversation, history: list[StoredMessage]) -> list[WireMessage]:
        out = [WireMessage(role="system", content=conv.system)] if conv.system else []
        out += [WireMessage(role=m.role, content=m.content) for m in history if m.content]
        return out

    @staticmethod
    def _request(model: str, messages: list[WireMessage], body: ReplyBody) -> ChatRequest:
        chat = ChatBody(
            model=model,
            messages=messages,
            options=body.options,
            stream=body.stream,
            think=body.think,
            format=body.format,
            keep_alive=body.keep_alive,
        )
        return convert.chat_to_core(chat)

    async def _start(
        self, ctx: RequestContext, conv: Conversation, model: str, request: ChatRequest
    ) -> Turn:
        if model != conv.model:
            await self.repo.update(conv.id, model=model)
        turn = Turn(conversation_id=conv.id, model=model, scrub=self._scrubber(ctx))
        turn.chunks = self._record(turn, self.gateway.chat(ctx, request))
        return turn

    async def _record(
        self, turn: Turn, chunks: AsyncIterator[ChatChunk]
    ) -> AsyncIterator[ChatChunk]:
        content: list[str] = []
        thinking: list[str] = []
        saved = False
        try:
            async for chunk in chunks:
                content.append(chunk.content)
                thinking.append(chunk.thinking)
                if chunk.done:
                    m = chunk.metrics
                    turn.message_id = await self._save(
                        turn,
                        NewMessage(
                            role="assistant",
                            content=turn.scrub("".join(content)),
                            thinking=turn.scrub("".join(thinking)),
                            model=turn.model,
                            done_reason=chunk.done_reason,
                            prompt_tokens=m.prompt_tokens if m else None,
                            completion_tokens=m.completion_tokens if m else None,
                        ),
                    )
                    saved = True
                yield chunk
        finally:
            if not saved and (any(content) or any(thinking)):
                partial = NewMessage(
                    role="assistant",
                    content=turn.scrub("".join(content)),
                    thinking=turn.scrub("".join(thinking)),
                    model=turn.model,
                    partial=True,
                )
                with anyio.CancelScope(shield=True):
                    await self._save(turn, partial)

    async def _save(self, turn: Turn, message: NewMessage) -> int | None:
        """The stored message's id; on failure None, with ``turn.store_error`` saying why
        (the final line carries it, so the client knows the reply was not kept)."""
        try:
            stored = await self.repo.append(turn.conversation_id, message)
        except Exception as exc:
            log.exception("could not store the reply in conversation %s", turn.conversation_id)
            turn.store_error = (
                f"the reply was not stored ({type(exc).__name__}); the server log has "
                "the details; send the message again to retry"
            )
            return None
        return stored.id


def _same(text: str) -> str:
    return text


def reply_fields(turn: Turn) -> dict[str, Any]:
    """What the final line of a reply adds to ``/api/chat``'s object: the conversation,
    the stored message's id, ``stored``, and ``store_error`` when it was not stored."""
    fields: dict[str, Any] = {
        "conversation_id": turn.conversation_id,
        "message_id": turn.message_id,
        "stored": turn.message_id is not None,
    }
    if turn.store_error is not None:
        fields["store_error"] = turn.store_error
    return fields
