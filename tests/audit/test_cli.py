"""``llmux audit``: verify passes on an intact trail and exits 1, naming the record,
after a row is edited or deleted in the database (SQLite and PostgreSQL); search and
tail show records; an export verifies offline; recipe prints the PostgreSQL recipe."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from llmux.audit.drain import DrainState, save_state
from llmux.cli.main import app
from llmux.storage.audit import SqlAudit, pg_recipe
from llmux.storage.database import Database
from tests.audit.conftest import chain


def run(home: Path, url: URL, *args: str) -> tuple[int, str]:
    env = {"LLMUX_HOME": str(home), "LLMUX_STORAGE__DATABASE_URL":
           url.render_as_string(hide_password=False)}  # fmt: skip
    result = CliRunner().invoke(app, ["audit", *args], env=env)
    return result.exit_code, result.output


def sql(url: URL, statement: str) -> None:
    async def go() -> None:
        db = Database(url)
        await db.open()
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(statement)
        await db.aclose()

    asyncio.run(go())


@pytest.fixture
def trail(db_url: URL, tmp_path: Path) -> URL:
    async def go() -> None:
        db = Database(db_url)
        await db.open()
        repo = SqlAudit(db)
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM audit_log")
            await conn.exec_driver_sql("DELETE FROM audit_anchors")
        await repo.add(chain("host-a", 12, time.time_ns() // 1000 - 10_000_000))
        await repo.add(chain("host-b", 3, time.time_ns() // 1000 - 5_000_000))
        await db.aclose()

    asyncio.run(go())
    return db_url


def test_verify_passes_then_fails_after_an_edit_and_a_deletion(trail: URL, tmp_path: Path) -> None:
    code, text = run(tmp_path, trail, "verify")
    assert code == 0, text
    assert "host-a: seq 1..12, 12 record(s): ok" in text and "host-b: seq 1..3" in text
    sql(trail, "UPDATE audit_log SET status = 201 WHERE replica = 'host-a' AND seq = 4")
    code, text = run(tmp_path, trail, "verify")
    assert code == 1 and "host-a seq 4: edited" in text and "status" in text
    sql(trail, "DELETE FROM audit_log WHERE replica = 'host-b' AND seq = 2")
    code, text = run(tmp_path, trail, "verify", "--json")
    assert code == 1
    report = json.loads(text[: text.rindex("}") + 1])
    kinds = {(r["replica"], p["kind"], p["seq"]) for r in report["replicas"] for p in r["problems"]}
    assert kinds == {("host-a", "edited", 4), ("host-b", "gap", 2)}


def test_a_spool_drained_past_the_table_is_a_missing_tail(trail: URL, tmp_path: Path) -> None:
    folder = tmp_path / "audit" / "0"
    folder.mkdir(parents=True)
    save_state(folder, DrainState("spool-000000000001.jsonl", 0, 14, "host-a"))
    code, text = run(tmp_path, trail, "verify")
    assert code == 1 and "missing tail" in text, text


def test_search_tail_export_and_recipe(trail: URL, tmp_path: Path) -> None:
    code, text = run(tmp_path, trail, "search", "--principal", "key1", "--json")
    assert code == 0, text
    found = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert found and {r["principal_name"] for r in found} == {"key1"}
    assert [r["ts"] for r in found] == sorted(r["ts"] for r in found), "oldest at the top"
    code, text = run(tmp_path, trail, "search", "--status", "4xx")
    assert code == 0 and "429" in text and "host-a:5" in text
    code, text = run(tmp_path, trail, "search", "--since", "not a time")
    assert code == 1 and "since" in text
    code, text = run(tmp_path, trail, "tail", "-n", "2", "--json")
    assert code == 0 and len([x for x in text.splitlines() if x.startswith("{")]) == 2
    export = tmp_path / "audit.jsonl"
    code, text = run(tmp_path, trail, "search", "--limit", "1000", "--json")
    export.write_text(text)
    assert run(tmp_path, trail, "verify", "--file", str(export))[0] == 0
    lines = export.read_text().splitlines()
    lines[2] = (
        lines[2].replace('"status":200', '"status":204').replace('"status": 200', '"status": 204')
    )
    export.write_text("\n".join(lines))
    code, text = run(tmp_path, trail, "verify", "--file", str(export))
    assert code == 1 and "edited" in text
    code, text = run(tmp_path, trail, "recipe")
    assert code == 0 and text == pg_recipe()
