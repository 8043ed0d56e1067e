"""Users, API keys, OAuth2 clients and revoked token ids, on SQLite or PostgreSQL.

Rows only: hashing, sealing and the rules of who may do what are ``auth/``'s. Scopes and
model patterns are stored as space-separated text.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from llmux.errors import InvalidRequest, NotFound
from llmux.storage.conversations import storable
from llmux.storage.database import Database

_meta = MetaData()
users = Table(
    "users",
    _meta,
    Column("id", String, primary_key=True),
    Column("name", Text),
    Column("password_hash", Text),
    Column("role", Text),
    Column("disabled", Boolean),
    Column("created_at", Float),
    Column("team", Text),
)
api_keys = Table(
    "api_keys",
    _meta,
    Column("id", String, primary_key=True),
    Column("user_id", String),
    Column("name", Text),
    Column("hash", Text),
    Column("scopes", Text),
    Column("models", Text),
    Column("created_at", Float),
    Column("expires_at", Float),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
clients = Table(
    "oauth_clients",
    _meta,
    Column("id", String, primary_key=True),
    Column("owner_id", String),
    Column("name", Text),
    Column("secret_hash", Text),
    Column("sealed_secret", Text),
    Column("scopes", Text),
    Column("models", Text),
    Column("created_at", Float),
    Column("revoked_at", Float),
)
sessions = Table(
    "sessions",
    _meta,
    Column("id", String, primary_key=True),
    Column("user_id", String),
    Column("csrf", Text),
    Column("created_at", Float),
    Column("last_seen_at", Float),
)
revoked_tokens = Table(
    "revoked_tokens",
    _meta,
    Column("jti", String, primary_key=True),
    Column("expires_at", Float),
    Column("revoked_at", Float),
)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    role: str
    disabled: bool
    created_at: float
    password_hash: str = ""
    team: str = ""  # budgets can be set for a team (docs/quotas.md)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at,
            "team": self.team or None,
        }


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str  # the keyed hash of the cookie's value
    user_id: str
    csrf: str
    created_at: float
    last_seen_at: float


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    user_id: str
    name: str
    hash: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "models": list(self.models),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked": self.revoked_at is not None,
        }


@dataclass(frozen=True, slots=True)
class ClientRow:
    id: str
    owner_id: str
    name: str
    secret_hash: str
    sealed_secret: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]
    created_at: float
    revoked_at: float | None

    def public(self) -> dict[str, Any]:
        return {
            "client_id": self.id,
            "owner_id": self.owner_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "models": list(self.models),
            "created_at": self.created_at,
            "revoked": self.revoked_at is not None,
        }


def _words(text: str | None) -> tuple[str, ...]:
    return tuple((text or "").split())


def _user(row: Any) -> User:
    return User(
        row.id, row.name, row.role, bool(row.disabled), row.created_at, row.password_hash,
        row.team or "",
    )  # fmt: skip


def _key(row: Any) -> KeyRow:
    return KeyRow(
        row.id, row.user_id, row.name, row.hash, _words(row.scopes), _words(row.models),
        row.created_at, row.expires_at, row.last_used_at, row.revoked_at,
    )  # fmt: skip


def _client(row: Any) -> ClientRow:
    return ClientRow(
        row.id, row.owner_id, row.name, row.secret_hash, row.sealed_secret,
        _words(row.scopes), _words(row.models), row.created_at, row.revoked_at,
    )  # fmt: skip


class SqlPrincipals:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _write(self, statement: Any) -> Any:
        """One statement in a transaction of its own."""
        async with self.db.engine.begin() as conn:
            return await conn.execute(statement)

    # -- users -------------------------------------------------------------------------

    async def add_user(self, name: str, password_hash: str, role: str) -> User:
        user = User(uuid.uuid4().hex, storable(name), role, False, time.time(), password_hash)
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    insert(users).values(
                        id=user.id, name=user.name, password_hash=password_hash, role=role,
                        disabled=False, created_at=user.created_at,
                    )
                )  # fmt: skip
        except IntegrityError:
            raise InvalidRequest(f"a user named {name!r} already exists", param="name") from None
        return user

    async def user(self, user_id: str) -> User | None:
        return await self._one_user(users.c.id == user_id)

    async def user_named(self, name: str) -> User | None:
        return await self._one_user(users.c.name == storable(name))

    async def _one_user(self, where: Any) -> User | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(users).where(where))).first()
        return _user(row) if row else None

    async def users(self) -> list[User]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(users).order_by(users.c.created_at))
            return [_user(r) for r in rows]

    async def first_admin(self) -> User | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(users)
                    .where(users.c.role == "admin", users.c.disabled.is_(False))
                    .order_by(users.c.created_at)
                    .limit(1)
                )
            ).first()
        return _user(row) if row else None

    async def count_admins(self) -> int:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(users.c.id).where(users.c.role == "admin", users.c.disabled.is_(False))
            )
            return len(rows.all())

    async def update_user(self, user_id: str, **values: Any) -> User:
        async with self.db.engine.begin() as conn:
            done = await conn.execute(update(users).where(users.c.id == user_id).values(**values))
        if not done.rowcount:
            raise NotFound(f"no user {user_id!r}")
        found = await self.user(user_id)
        assert found is not None
        return found

    async def delete_user(self, user_id: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            await conn.execute(delete(api_keys).where(api_keys.c.user_id == user_id))
            await conn.execute(delete(clients).where(clients.c.owner_id == user_id))
            done = await conn.execute(delete(users).where(users.c.id == user_id))
        if not done.rowcount:
            raise NotFound(f"no user {user_id!r}")

    # -- API keys ----------------------------------------------------------------------

    async def add_key(self, row: KeyRow) -> None:
        await self._write(
            insert(api_keys).values(
                id=row.id, user_id=row.user_id, name=storable(row.name), hash=row.hash,
                scopes=" ".join(row.scopes), models=" ".join(row.models),
                created_at=row.created_at, expires_at=row.expires_at,
            )
        )  # fmt: skip

    async def key(self, key_id: str) -> KeyRow | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key(row) if row else None

    async def keys(self, user_id: str | None = None) -> list[KeyRow]:
        return [_key(r) for r in await self._rows(api_keys, api_keys.c.user_id, user_id)]

    async def revoke_key(self, key_id: str) -> bool:
        return await self._revoke(api_keys, key_id)

    async def _rows(self, table: Table, owner_column: Any, owner: str | None) -> list[Any]:
        """Every row of ``table``, oldest first; only ``owner``'s when given."""
        query = select(table).order_by(table.c.created_at)
        if owner is not None:
            query = query.where(owner_column == owner)
        async with self.db.engine.connect() as conn:
            return list(await conn.execute(query))

    async def _revoke(self, table: Table, row_id: str) -> bool:
        """Mark a row of ``table`` revoked; False when there is no such active row."""
        done = await self._write(
            update(table)
            .where(table.c.id == row_id, table.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        return bool(done.rowcount)

    async def touch_key(self, key_id: str, when: float) -> None:
        await self._write(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=when))

    # -- OAuth2 clients ----------------------------------------------------------------

    async def add_client(self, row: ClientRow) -> None:
        await self._write(
            insert(clients).values(
                id=row.id, owner_id=row.owner_id, name=storable(row.name),
                secret_hash=row.secret_hash, sealed_secret=row.sealed_secret,
                scopes=" ".join(row.scopes), models=" ".join(row.models),
                created_at=row.created_at,
            )
        )  # fmt: skip

    async def client(self, client_id: str) -> ClientRow | None:
        if storable(client_id) != client_id:
            return None
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(clients).where(clients.c.id == client_id))).first()
        return _client(row) if row else None

    async def clients(self, owner_id: str | None = None) -> list[ClientRow]:
        return [_client(r) for r in await self._rows(clients, clients.c.owner_id, owner_id)]

    async def set_client_secret(self, client_id: str, secret_hash: str, sealed: str) -> bool:
        async with self.db.engine.begin() as conn:
            done = await conn.execute(
                update(clients)
                .where(clients.c.id == client_id, clients.c.revoked_at.is_(None))
                .values(secret_hash=secret_hash, sealed_secret=sealed)
            )
        return bool(done.rowcount)

    async def revoke_client(self, client_id: str) -> bool:
        return await self._revoke(clients, client_id)

    # -- UI sessions --------------------------------------------------------------------

    async def add_session(self, row: SessionRow, older_than: float) -> None:
        """Store a session, and drop every session last seen before ``older_than``."""
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.last_seen_at < older_than))
            await conn.execute(
                insert(sessions).values(
                    id=row.id, user_id=row.user_id, csrf=row.csrf, created_at=row.created_at,
                    last_seen_at=row.last_seen_at,
                )
            )  # fmt: skip

    async def session(self, session_id: str) -> SessionRow | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
        return SessionRow(*row) if row else None

    async def touch_session(self, session_id: str, when: float) -> None:
        await self._write(
            update(sessions).where(sessions.c.id == session_id).values(last_seen_at=when)
        )

    async def end_session(self, session_id: str) -> None:
        await self._write(delete(sessions).where(sessions.c.id == session_id))

    async def end_sessions_of(self, user_id: str) -> None:
        await self._write(delete(sessions).where(sessions.c.user_id == user_id))

    # -- revoked tokens ----------------------------------------------------------------

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        now = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(revoked_tokens).where(revoked_tokens.c.expires_at < now))
            await conn.execute(delete(revoked_tokens).where(revoked_tokens.c.jti == jti))
            await conn.execute(
                insert(revoked_tokens).values(jti=jti, expires_at=expires_at, revoked_at=now)
            )

    async def token_revoked(self, jti: str) -> bool:
        if storable(jti) != jti:
            return False
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == jti))
            ).first()
        return row is not None
