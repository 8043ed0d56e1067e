"""Opening the history database: URLs, and errors that say what is wrong without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmux.errors import LlmuxError
from llmux.storage.database import Database, database_url

pytestmark = pytest.mark.anyio


def test_urls_get_async_drivers(tmp_path: Path) -> None:
    assert (
        database_url(None, tmp_path).render_as_string()
        == f"sqlite+aiosqlite:///{tmp_path}/llmux.db"
    )
    assert database_url("sqlite:///x.db", tmp_path).drivername == "sqlite+aiosqlite"
    pg = database_url("postgresql://u:pw@h:5/db", tmp_path)
    assert pg.drivername == "postgresql+asyncpg" and pg.database == "db"
    assert database_url("postgres://u@h/db", tmp_path).drivername == "postgresql+asyncpg"
    for bad in ("mysql://u@h/db", "not a url"):
        with pytest.raises(LlmuxError, match="sqlite"):
            database_url(bad, tmp_path)


async def test_a_database_that_cannot_open_names_it_without_the_password(
    tmp_path: Path, pg_url: str
) -> None:
    url = pg_url.replace("postgres@", "postgres:s3cret@").rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(LlmuxError) as err:
        await Database(database_url(url, tmp_path)).open()
    assert "no_such_db" in err.value.message and "does not exist" in err.value.message
    assert "s3cret" not in err.value.message and "***" in err.value.message
    with pytest.raises(LlmuxError, match=r"(?i)connect"):
        await Database(database_url("postgresql://u@127.0.0.1:1/x", tmp_path)).open()
