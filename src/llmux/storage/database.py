"""The SQL database: URL handling, the async engine and its connection settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmux.errors import LlmuxError
from llmux.storage.migrations import migrate

log = logging.getLogger(__name__)
Dialect = Literal["sqlite", "postgresql"]


def database_url(url: str | None, home: Path) -> URL:
    """The async driver URL: ``sqlite:///path`` and ``postgresql://...`` are accepted as
    written; no URL means ``$LLMUX_HOME/llmux.db``."""
    if not url:
        return make_url(f"sqlite+aiosqlite:///{home / 'llmux.db'}")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise LlmuxError(
            f"database_url {without_password(url)!r} is not a database URL; use "
            "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    if "@" in (parsed.host or ""):
        raise LlmuxError(
            f"database_url {without_password(url)!r} has more than one '@': "
            "percent-encode an '@' in the user name or password as %40"
        )
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise LlmuxError(f"database_url: {backend!r} is not supported; use sqlite or postgresql")


def redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def without_password(url: str) -> str:
    """A URL string that may not parse, for messages: what follows ``user:`` up to the
    last ``@`` (the password, whatever it holds) is hidden."""
    if "@" not in url:
        return url
    head, at, tail = url.rpartition("@")
    scheme, sep, userinfo = head.rpartition("://") if "://" in head else ("", "", head)
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}{colon and ':***'}{at}{tail}"


class Database:
    """Owns the engine. :meth:`open` migrates the schema to the newest version."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.dialect: Dialect = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
        kwargs: dict[str, Any] = {}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        else:
            folder = Path(url.database or "").parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LlmuxError(
                    f"cannot create {folder} for the history database: {exc}"
                ) from None
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.version = 0  # the schema's, once open
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def open(self) -> None:
        try:
            async with self.engine.begin() as conn:
                version = await conn.run_sync(migrate, self.dialect)
        except ImportError as exc:
            raise LlmuxError(
                f"the driver for {self.dialect} is not installed ({exc}); "
                "install it with `pip install 'llmux[postgres]'`"
            ) from None
        except (OSError, SQLAlchemyError) as exc:
            reason = getattr(exc, "orig", None) or exc
            raise LlmuxError(
                f"could not open the database at {redacted(self.url)}: {reason}"
            ) from None
        self.version = version
        log.info("history database %s (schema version %d)", redacted(self.url), version)

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; synchronous=FULL makes every committed
    message durable across a crash or power loss; foreign keys cascade deletes."""
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        "foreign_keys=ON",
        "busy_timeout=5000",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


async def preflight(url: URL) -> None:
    """Open (and migrate) the database once and close it: ``llmux serve`` calls this
    before starting so that a bad ``database_url`` is one line, not a traceback."""
    db = Database(url)
    try:
        await db.open()
    finally:
        await db.aclose()
