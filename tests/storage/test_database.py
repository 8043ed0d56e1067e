"""Opening the history database: URLs, and errors that say what is wrong without secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmux.errors import LlmuxError
from llmux.storage.database import Database, database_url, without_password

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


@pytest.mark.parametrize(
    "url",
    [
        "postgresql//u:s3cret@h/db",  # no colon after the scheme
        "postgresql://u:s3cret@h:port/db",  # a port that is not a number
        "postgresql://u:s3cret@[::1/db",
        "postgresql://u:s3c@ret@h/db",  # an unencoded @ in the password
    ],
)
def test_a_malformed_url_is_refused_without_its_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(LlmuxError) as err:
        database_url(url, tmp_path)
    assert "s3c" not in err.value.message and "ret" not in err.value.message


def test_without_password_hides_what_it_can_find() -> None:
    assert without_password("postgresql://u:a/b@c@h/db") == "postgresql://u:***@h/db"
    assert without_password("x//u:pw@h") == "x//u:***@h"
    assert without_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert without_password("sqlite:///a:b.db") == "sqlite:///a:b.db"


def test_serve_with_a_malformed_url_prints_no_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update(
        LLMUX_HOME=str(tmp_path),
        LLMUX_STORAGE__DATABASE_URL="postgresql://admin:hunter2@db:port/x",
        LLMUX_HOST="127.0.0.1:1",
    )
    done = subprocess.run(
        [sys.executable, "-m", "llmux", "serve"], env=env, capture_output=True, timeout=60
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode != 0 and "database_url" in output
    assert "hunter2" not in output and "Traceback" not in output
