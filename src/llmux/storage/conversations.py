"""Conversations and their messages: the repository Protocol and its SQL implementation.

One row per message, so appending a turn is one INSERT and one UPDATE, never a rewrite
of the conversation. Search uses the dialect's full-text index (see ``migrations``):
every word of the query must occur, as a word or a word prefix, in the title or in one
message.

Text is stored the same on both databases: PostgreSQL's ``text`` cannot hold U+0000 and
neither database takes a lone UTF-16 surrogate, so both become U+FFFD (the replacement
character) on the way in (:func:`storable`). An id that no row can have (one with such
characters) is simply not found. ``limit`` and ``offset`` beyond a 64-bit integer are the
caller's to refuse (the route bounds them); here they are clamped.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from llmux.core.conversations import (
    Conversation,
    ConversationNotFound,
    NewMessage,
    StoredMessage,
)
from llmux.storage.database import Database

MAX_SEARCH_TERMS = 16
WINDOW = 4000  # newest messages searched first (see SqlConversations._search)

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
    Column("owner", Text),
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


MAX_ROWS = 2**62  # limit/offset past a signed 64-bit integer overflow both drivers


def storable(value: str) -> str:
    """``value`` as both databases store it: U+0000 and lone surrogates become U+FFFD."""
    if value.isascii():
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\x00", "\ufffd")


def _known_id(conversation_id: str) -> str:
    """``conversation_id`` if a row could have it; else ConversationNotFound (a NUL would
    be a database error on PostgreSQL)."""
    if storable(conversation_id) != conversation_id:
        raise ConversationNotFound(conversation_id.encode("unicode_escape").decode())
    return conversation_id


def search_terms(query: str) -> list[str]:
    """The words of a search box query; punctuation and FTS operators are dropped, so
    any text is safe to search for."""
    return [t.lower() for t in re.findall(r"\w+", query)][:MAX_SEARCH_TERMS]


class SqlConversations:
    """:class:`ConversationRepository` on SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, *, title: str = "", model: str = "", system: str = "", owner: str | None = None
    ) -> Conversation:
        now = time.time()
        title, model, system = storable(title), storable(model), storable(system)
        row = Conversation(uuid.uuid4().hex, title, model, system, now, now, 0, owner=owner)
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
                    owner=owner,
                )
            )
        return row

    async def adopt(self, owner: str) -> int:
        """Give every conversation without an owner to ``owner``; how many there were."""
        async with self.db.engine.begin() as conn:
            done = await conn.execute(
                update(conversations).where(conversations.c.owner.is_(None)).values(owner=owner)
            )
        return int(done.rowcount or 0)

    async def get(self, conversation_id: str) -> Conversation:
        async with self.db.engine.connect() as conn:
            return await self._get(conn, conversation_id)

    async def _get(self, conn: AsyncConnection, conversation_id: str) -> Conversation:
        _known_id(conversation_id)
        found = (
            await conn.execute(
                select(*_CONVERSATION_COLUMNS).where(conversations.c.id == conversation_id)
            )
        ).first()
        if found is None:
            raise ConversationNotFound(conversation_id)
        return _conversation(found)

    async def find(
        self, *, query: str = "", limit: int = 50, offset: int = 0, owner: str | None = None
    ) -> list[Conversation]:
        """The newest first, or those matching ``query``; only ``owner``'s when given."""
        terms = search_terms(query)
        limit, offset = min(max(limit, 0), MAX_ROWS), min(max(offset, 0), MAX_ROWS)
        async with self.db.engine.connect() as conn:
            if not terms:
                query_ = select(*_CONVERSATION_COLUMNS)
                if owner is not None:
                    query_ = query_.where(conversations.c.owner == owner)
                rows = await conn.execute(
                    query_.order_by(conversations.c.updated_at.desc()).limit(limit).offset(offset)
                )
                return [_conversation(r) for r in rows]
            return await self._search(conn, terms, limit, offset, owner)

    async def _search(
        self,
        conn: AsyncConnection,
        terms: list[str],
        limit: int,
        offset: int,
        owner: str | None = None,
    ) -> list[Conversation]:
        """Conversations whose newest match is newest come first.

        First only the newest ``WINDOW`` messages are searched (a primary-key range, in
        both databases). Every match there is newer than any outside it, so if the window
        already holds ``offset + limit`` conversations they are the answer: a word found
        in most messages costs no more than a rare one. Otherwise the whole index is asked
        for the (then few) remaining matches.
        """
        sql = _SEARCH_SQL[self.db.dialect, owner is not None]
        q: dict[str, Any] = {"q": _match_expression(self.db.dialect, terms)}
        if owner is not None:
            q["owner"] = owner
        ranked: dict[str, float] = {}
        for cid, updated in await conn.execute(text(sql.titles), q):
            ranked[cid] = updated
        newest: dict[str, tuple[float, int]] = {}  # conversation -> newest matching message

        def take(rows: Sequence[Any]) -> None:
            for cid, message_id, created in rows:
                if cid not in newest or newest[cid][1] < message_id:
                    newest[cid] = (created, message_id)

        top = (await conn.execute(select(func.max(messages.c.id)))).scalar() or 0
        take((await conn.execute(text(sql.recent), {**q, "after": top - WINDOW})).all())
        if len(newest) < offset + limit and top > WINDOW:
            take((await conn.execute(text(sql.messages), {**q, "before": top - WINDOW + 1})).all())
        for cid, (created, _) in newest.items():
            ranked[cid] = max(ranked.get(cid, created), created)
        page = sorted(ranked, key=lambda cid: ranked[cid], reverse=True)[offset : offset + limit]
        if not page:
            return []
        rows = await conn.execute(
            select(*_CONVERSATION_COLUMNS).where(conversations.c.id.in_(page))
        )
        by_id = {r[0]: r for r in rows}
        message_ids = [newest[c][1] for c in page if c in newest]
        snippets: dict[int, str] = {}
        if message_ids:
            found = await conn.execute(
                select(messages.c.id, messages.c.content).where(messages.c.id.in_(message_ids))
            )
            snippets = {mid: snippet(content, terms) for mid, content in found}
        return [
            _conversation(by_id[c], snippets.get(newest[c][1]) if c in newest else None)
            for c in page
            if c in by_id
        ]

    async def update(self, conversation_id: str, **fields: str) -> Conversation:
        values = {k: storable(v) for k, v in fields.items() if k in ("title", "model", "system")}
        _known_id(conversation_id)
        async with self.db.engine.begin() as conn:
            if values:
                await conn.execute(
                    update(conversations)
                    .where(conversations.c.id == conversation_id)
                    .values(**values, updated_at=time.time())
                )
            return await self._get(conn, conversation_id)

    async def delete(self, conversation_id: str) -> None:
        _known_id(conversation_id)
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
        _known_id(conversation_id)
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
        _known_id(conversation_id)
        message = replace(
            message,
            role=storable(message.role),
            content=storable(message.content),
            thinking=storable(message.thinking),
            model=storable(message.model),
        )
        title_if_empty = storable(title_if_empty)
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
        _known_id(conversation_id)
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
        owner=row[7],
    )


def snippet(content: str, terms: Sequence[str], width: int = 12) -> str:
    """About ``width`` words of ``content`` around the first word a term starts."""
    words = content.split()
    at = next(
        (i for i, w in enumerate(words) if any(t in w.lower() for t in terms)),
        0,
    )
    start = max(0, at - width // 3)
    piece = " ".join(words[start : start + width])
    return ("…" if start else "") + piece + ("…" if start + width < len(words) else "")


@dataclass(frozen=True, slots=True)
class _SearchSql:
    """``{join}`` and ``{only}`` narrow a query to one owner's conversations."""

    titles: str  # (conversation id, updated_at) whose title matches
    recent: str  # (conversation id, message id, created_at) matching, message id > :after
    messages: str  # the same for message id < :before

    def for_owner(self, narrowed: bool) -> _SearchSql:
        join = " JOIN conversations c ON c.id = m.conversation_id" if narrowed else ""
        only = " AND c.owner = :owner" if narrowed else ""
        return _SearchSql(
            self.titles.format(join="", only=only),
            self.recent.format(join=join, only=only),
            self.messages.format(join=join, only=only),
        )


_SEARCH = {
    "sqlite": _SearchSql(
        titles="""
            SELECT c.id, c.updated_at FROM conversations c WHERE c.rowid IN
                (SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH :q){only}""",
        recent="""
            SELECT m.conversation_id, m.id, m.created_at
            FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid{join}
            WHERE messages_fts MATCH :q AND messages_fts.rowid > :after{only}""",
        messages="""
            SELECT m.conversation_id, m.id, m.created_at
            FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid{join}
            WHERE messages_fts MATCH :q AND messages_fts.rowid < :before{only}""",
    ),
    "postgresql": _SearchSql(
        titles="""
            SELECT c.id, c.updated_at FROM conversations c
            WHERE c.search @@ to_tsquery('simple', :q){only}""",
        # "IS TRUE" keeps the planner on the primary-key range: the GIN index would
        # read every match of a common word first
        recent="""
            SELECT m.conversation_id, m.id, m.created_at FROM messages m{join}
            WHERE m.id > :after AND (m.search @@ to_tsquery('simple', :q)) IS TRUE{only}""",
        messages="""
            SELECT m.conversation_id, m.id, m.created_at FROM messages m{join}
            WHERE m.search @@ to_tsquery('simple', :q) AND m.id < :before{only}""",
    ),
}


# formatted once: (dialect, narrowed to one owner) -> the queries
_SEARCH_SQL = {
    (dialect, narrowed): sql.for_owner(narrowed)
    for dialect, sql in _SEARCH.items()
    for narrowed in (False, True)
}


def _match_expression(dialect: str, terms: Sequence[str]) -> str:
    """Every term as a word prefix, all required."""
    if dialect == "sqlite":
        return " ".join(f'"{t}"*' for t in terms)
    return " & ".join(f"'{t}':*" for t in terms)
