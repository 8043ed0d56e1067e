"""Conversations and their messages: the repository Protocol and its SQL implementation.

One row per message, so appending a turn is one INSERT and one UPDATE, never a rewrite
of the conversation. Search uses the dialect's full-text index (see ``migrations``):
every word of the query must occur, as a word or a word prefix, in the title or in one
message.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from llmux.errors import NotFound
from llmux.storage.database import Database

MAX_SEARCH_TERMS = 16

_meta = MetaData()
conversations = Table(
    "conversations",
    _meta,
    Column("id", String, primary_key=True),
    Column("title", Text),
    Column("model", Text),
    Column("system", Text),
    Column("created_at", Float),
    Column("updated_at", Float),
    Column("message_count", Integer),
)
messages = Table(
    "messages",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("conversation_id", String),
    Column("role", Text),
    Column("content", Text),
    Column("thinking", Text),
    Column("model", Text),
    Column("created_at", Float),
    Column("partial", Boolean),
    Column("done_reason", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
)
_CONVERSATION_COLUMNS = [c for c in conversations.c]


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
        self, *, title: str = "", model: str = "", system: str = ""
    ) -> Conversation: ...

    async def get(self, conversation_id: str) -> Conversation: ...

    async def find(
        self, *, query: str = "", limit: int = 50, offset: int = 0
    ) -> list[Conversation]: ...

    async def update(self, conversation_id: str, **fields: str) -> Conversation: ...

    async def delete(self, conversation_id: str) -> None: ...

    async def messages(self, conversation_id: str) -> list[StoredMessage]: ...

    async def append(
        self, conversation_id: str, message: NewMessage, *, title_if_empty: str = ""
    ) -> StoredMessage: ...

    async def delete_message(self, conversation_id: str, message_id: int) -> None: ...


def search_terms(query: str) -> list[str]:
    """The words of a search box query; punctuation and FTS operators are dropped, so
    any text is safe to search for."""
    return [t.lower() for t in re.findall(r"\w+", query)][:MAX_SEARCH_TERMS]


class SqlConversations:
    """:class:`ConversationRepository` on SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, *, title: str = "", model: str = "", system: str = "") -> Conversation:
        now = time.time()
        row = Conversation(uuid.uuid4().hex, title, model, system, now, now, 0)
        async with self.db.engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=row.id,
                    title=title,
                    model=model,
                    system=system,
                    created_at=now,
                    updated_at=now,
                    message_count=0,
                )
            )
        return row

    async def get(self, conversation_id: str) -> Conversation:
        async with self.db.engine.connect() as conn:
            return await self._get(conn, conversation_id)

    async def _get(self, conn: AsyncConnection, conversation_id: str) -> Conversation:
        found = (
            await conn.execute(
                select(*_CONVERSATION_COLUMNS).where(conversations.c.id == conversation_id)
            )
        ).first()
        if found is None:
            raise ConversationNotFound(conversation_id)
        return _conversation(found)

    async def find(
        self, *, query: str = "", limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        terms = search_terms(query)
        async with self.db.engine.connect() as conn:
            if not terms:
                rows = await conn.execute(
                    select(*_CONVERSATION_COLUMNS)
                    .order_by(conversations.c.updated_at.desc())
                    .limit(limit)
                    .offset(offset)
                )
                return [_conversation(r) for r in rows]
            return await self._search(conn, terms, limit, offset)

    async def _search(
        self, conn: AsyncConnection, terms: list[str], limit: int, offset: int
    ) -> list[Conversation]:
        sql = _SEARCH[self.db.dialect]
        params: dict[str, Any] = {"q": _match_expression(self.db.dialect, terms)}
        rows = (
            await conn.execute(text(sql.matches), {**params, "limit": limit, "offset": offset})
        ).all()
        if not rows:
            return []
        ids = [r[0] for r in rows]
        snippets: dict[str, str] = {}
        stmt = text(sql.snippets).bindparams(bindparam("ids", expanding=True))
        for cid, snippet in await conn.execute(stmt, {**params, "ids": ids}):
            snippets.setdefault(cid, snippet)
        return [_conversation(r, snippets.get(r[0])) for r in rows]

    async def update(self, conversation_id: str, **fields: str) -> Conversation:
        values = {k: v for k, v in fields.items() if k in ("title", "model", "system")}
        async with self.db.engine.begin() as conn:
            if values:
                await conn.execute(
                    update(conversations)
                    .where(conversations.c.id == conversation_id)
                    .values(**values, updated_at=time.time())
                )
            return await self._get(conn, conversation_id)

    async def delete(self, conversation_id: str) -> None:
        async with self.db.engine.begin() as conn:
            # messages go first so SQLite's FTS triggers see them (no reliance on cascades)
            await conn.execute(
                delete(messages).where(messages.c.conversation_id == conversation_id)
            )
            gone = await conn.execute(
                delete(conversations).where(conversations.c.id == conversation_id)
            )
            if gone.rowcount == 0:
                raise ConversationNotFound(conversation_id)

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(*messages.c)
                .where(messages.c.conversation_id == conversation_id)
                .order_by(messages.c.id)
            )
            found = [StoredMessage(*r) for r in rows]
            if not found:
                await self._get(conn, conversation_id)  # 404 for an unknown id
            return found

    async def append(
        self, conversation_id: str, message: NewMessage, *, title_if_empty: str = ""
    ) -> StoredMessage:
        now = time.time()
        async with self.db.engine.begin() as conn:
            bumped = await conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(message_count=conversations.c.message_count + 1, updated_at=now)
            )
            if bumped.rowcount == 0:
                raise ConversationNotFound(conversation_id)
            if title_if_empty:
                await conn.execute(
                    update(conversations)
                    .where(conversations.c.id == conversation_id, conversations.c.title == "")
                    .values(title=title_if_empty)
                )
            new_id = (
                await conn.execute(
                    insert(messages)
                    .values(
                        conversation_id=conversation_id,
                        role=message.role,
                        content=message.content,
                        thinking=message.thinking,
                        model=message.model,
                        created_at=now,
                        partial=message.partial,
                        done_reason=message.done_reason,
                        prompt_tokens=message.prompt_tokens,
                        completion_tokens=message.completion_tokens,
                    )
                    .returning(messages.c.id)
                )
            ).scalar_one()
        return StoredMessage(
            new_id,
            conversation_id,
            message.role,
            message.content,
            message.thinking,
            message.model,
            now,
            message.partial,
            message.done_reason,
            message.prompt_tokens,
            message.completion_tokens,
        )

    async def delete_message(self, conversation_id: str, message_id: int) -> None:
        async with self.db.engine.begin() as conn:
            gone = await conn.execute(
                delete(messages).where(
                    messages.c.id == message_id, messages.c.conversation_id == conversation_id
                )
            )
            if gone.rowcount:
                await conn.execute(
                    update(conversations)
                    .where(conversations.c.id == conversation_id)
                    .values(
                        message_count=conversations.c.message_count - gone.rowcount,
                        updated_at=time.time(),
                    )
                )


def _conversation(row: Sequence[Any], snippet: str | None = None) -> Conversation:
    return Conversation(
        id=row[0],
        title=row[1],
        model=row[2],
        system=row[3],
        created_at=row[4],
        updated_at=row[5],
        message_count=row[6],
        snippet=snippet,
    )


@dataclass(frozen=True, slots=True)
class _SearchSql:
    matches: str
    snippets: str


_COLUMNS = "c.id, c.title, c.model, c.system, c.created_at, c.updated_at, c.message_count"
_SEARCH = {
    "sqlite": _SearchSql(
        matches=f"""
            SELECT {_COLUMNS} FROM conversations c
            WHERE c.rowid IN (SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH :q)
               OR c.id IN (SELECT m.conversation_id FROM messages_fts
                           JOIN messages m ON m.id = messages_fts.rowid
                           WHERE messages_fts MATCH :q)
            ORDER BY c.updated_at DESC LIMIT :limit OFFSET :offset""",
        snippets="""
            SELECT m.conversation_id, snippet(messages_fts, 0, '', '', '…', 12)
            FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
            WHERE messages_fts MATCH :q AND m.conversation_id IN :ids
            ORDER BY m.id DESC""",
    ),
    "postgresql": _SearchSql(
        matches=f"""
            SELECT {_COLUMNS} FROM conversations c
            WHERE c.search @@ to_tsquery('simple', :q)
               OR c.id IN (SELECT m.conversation_id FROM messages m
                           WHERE m.search @@ to_tsquery('simple', :q))
            ORDER BY c.updated_at DESC LIMIT :limit OFFSET :offset""",
        snippets="""
            SELECT DISTINCT ON (m.conversation_id) m.conversation_id,
                   ts_headline('simple', m.content, to_tsquery('simple', :q),
                               'StartSel="", StopSel="", MaxWords=14, MinWords=5')
            FROM messages m
            WHERE m.conversation_id IN :ids AND m.search @@ to_tsquery('simple', :q)
            ORDER BY m.conversation_id, m.id DESC""",
    ),
}


def _match_expression(dialect: str, terms: Sequence[str]) -> str:
    """Every term as a word prefix, all required."""
    if dialect == "sqlite":
        return " ".join(f'"{t}"*' for t in terms)
    return " & ".join(f"'{t}':*" for t in terms)
