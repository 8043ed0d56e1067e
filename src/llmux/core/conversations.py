"""Conversations and their messages as values, and the repository Protocol that
stores them (``storage/conversations.py`` implements it in SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from llmux.errors import NotFound


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    title: str
    model: str
    system: str
    created_at: float
    updated_at: float
    message_count: int
    snippet: str | None = None
    owner: str | None = None  # the principal it belongs to (None: made with access control off)


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: str
    content: str
    thinking: str = ""
    model: str = ""
    partial: bool = False
    done_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    conversation_id: str
    role: str
    content: str
    thinking: str
    model: str
    created_at: float
    partial: bool
    done_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class ConversationNotFound(NotFound):
    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation '{conversation_id}' not found", param="id")


class ConversationRepository(Protocol):
    async def create(
        self, *, title: str = "", model: str = "", system: str = "", owner: str | None = None
    ) -> Conversation: ...

    async def get(self, conversation_id: str) -> Conversation: ...

    async def find(
        self, *, query: str = "", limit: int = 50, offset: int = 0, owner: str | None = None
    ) -> list[Conversation]: ...

    async def adopt(self, owner: str) -> int: ...

    async def update(self, conversation_id: str, **fields: str) -> Conversation: ...

    async def delete(self, conversation_id: str) -> None: ...

    async def messages(self, conversation_id: str) -> list[StoredMessage]: ...

    async def append(
        self, conversation_id: str, message: NewMessage, *, title_if_empty: str = ""
    ) -> StoredMessage: ...

    async def delete_message(self, conversation_id: str, message_id: int) -> None: ...
