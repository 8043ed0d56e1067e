"""Conversation history at scale: append, list and search with 100,000 stored messages.

    .venv/bin/python bench/history.py [--messages 100000] [--postgres URL]

Fills a fresh database (SQLite in a temp dir; PostgreSQL too with --postgres, into a
database the bench creates and drops) with synthetic chats, then times llmux's
repository calls. The baseline, measured in the same run on the same engine and the same
text, is the design the issue warns about: each chat kept as one JSON document that is
rewritten on every turn and searched with LIKE. Prints p50/p99 in milliseconds and
llmux / baseline ratios (below 1 is faster). Target: every llmux p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import insert, text  # noqa: E402

from llmux.storage.conversations import NewMessage, SqlConversations, conversations, messages  # noqa: E402
from llmux.storage.database import Database, database_url  # noqa: E402

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "this",
    "be",
    "from",
    "are",
    "or",
    "an",
    "have",
    "not",
    "model",
    "answer",
    "question",
    "light",
    "plant",
    "energy",
    "river",
    "mountain",
    "history",
    "school",
    "lesson",
    "python",
    "function",
    "error",
    "server",
    "network",
    "memory",
    "student",
    "teacher",
    "science",
    "planet",
    "ocean",
    "music",
    "garden",
    "kitchen",
    "recipe",
    "travel",
    "city",
    "language",
    "number",
    "proof",
    "theorem",
    "graph",
    "engine",
    "cache",
]
RARE = "xylophone"
PER_CONVERSATION = 50
WARMUP = 10


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def fake_chats(total: int, seed: int = 7) -> list[tuple[str, str, list[tuple[str, str]]]]:
    rng = random.Random(seed)
    chats = []
    for i in range(total // PER_CONVERSATION):
        msgs = [
            ("user" if j % 2 == 0 else "assistant", sentence(rng, 12 if j % 2 == 0 else 60))
            for j in range(PER_CONVERSATION)
        ]
        if i == total // PER_CONVERSATION // 2:
            msgs[7] = ("assistant", msgs[7][1] + f" A {RARE} is a musical instrument.")
        chats.append((uuid.uuid4().hex, sentence(rng, 5), msgs))
    return chats


async def settle(db: Database) -> None:
    """Planner statistics and a checkpoint after the bulk load, as a database that has
    been in use has them (otherwise autovacuum runs in the middle of the timings)."""
    if db.dialect == "postgresql":
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            await conn.exec_driver_sql("ANALYZE")


async def timed(fn: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    for _ in range(WARMUP):  # caches and connections warm, as in a server that has run a while
        await fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def fill(db: Database, chats: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
    now = time.time()
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(conversations),
            [
                {
                    "id": cid,
                    "title": title,
                    "model": "m",
                    "system": "",
                    "created_at": now + i,
                    "updated_at": now + i,
                    "message_count": len(msgs),
                }
                for i, (cid, title, msgs) in enumerate(chats)
            ],
        )
        rows = [
            {
                "conversation_id": cid,
                "role": role,
                "content": content,
                "thinking": "",
                "model": "m",
                "created_at": now,
                "partial": False,
                "done_reason": None,
                "prompt_tokens": None,
                "completion_tokens": None,
            }
            for cid, _, msgs in chats
            for role, content in msgs
        ]
        for start in range(0, len(rows), 5000):
            await conn.execute(insert(messages), rows[start : start + 5000])
        await conn.execute(
            text(
                "CREATE TABLE blob_chats (id TEXT PRIMARY KEY, title TEXT, updated_at DOUBLE PRECISION,"
                " data TEXT)"
            )
        )
        await conn.execute(
            text("INSERT INTO blob_chats VALUES (:id, :title, :u, :data)"),
            [
                {
                    "id": cid,
                    "title": title,
                    "u": now + i,
                    "data": json.dumps([{"role": r, "content": c} for r, c in msgs]),
                }
                for i, (cid, title, msgs) in enumerate(chats)
            ],
        )


async def blob_append(db: Database, cid: str, content: str) -> None:
    async with db.engine.begin() as conn:
        data = (
            await conn.execute(text("SELECT data FROM blob_chats WHERE id = :id"), {"id": cid})
        ).scalar_one()
        chat = json.loads(data)
        chat.append({"role": "user", "content": content})
        await conn.execute(
            text("UPDATE blob_chats SET data = :d, updated_at = :u WHERE id = :id"),
            {"d": json.dumps(chat), "u": time.time(), "id": cid},
        )


async def blob_search(db: Database, term: str) -> list[object]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, title FROM blob_chats WHERE title LIKE :p OR data LIKE :p "
                "ORDER BY updated_at DESC LIMIT 50"
            ),
            {"p": f"%{term}%"},
        )
        return list(rows)


async def blob_list(db: Database) -> list[object]:
    async with db.engine.connect() as conn:
        return list(
            await conn.execute(
                text("SELECT id, title FROM blob_chats ORDER BY updated_at DESC LIMIT 50")
            )
        )


async def measure(
    db: Database, total: int, runs: int
) -> dict[str, tuple[list[float], list[float]]]:
    chats = fake_chats(total)
    t = time.perf_counter()
    await fill(db, chats)
    print(f"  filled {total:,} messages in {len(chats):,} chats in {time.perf_counter() - t:.1f} s")
    await settle(db)
    repo = SqlConversations(db)
    rng = random.Random(1)
    ids = [c[0] for c in chats]
    rare_id = chats[len(chats) // 2][0]
    del chats  # a server holds no 100,000 message objects: keep the heap (and GC) its size
    gc.collect()
    gc.freeze()
    results: dict[str, tuple[list[float], list[float]]] = {}
    results["append"] = (
        await timed(
            lambda: repo.append(rng.choice(ids), NewMessage("user", sentence(rng, 12))), runs
        ),
        await timed(lambda: blob_append(db, rng.choice(ids), sentence(rng, 12)), runs),
    )
    results["list 50"] = (
        await timed(lambda: repo.find(limit=50), runs),
        await timed(lambda: blob_list(db), runs),
    )
    results["search rare word"] = (
        await timed(lambda: repo.find(query=RARE), runs),
        await timed(lambda: blob_search(db, RARE), runs),
    )
    results["search common word"] = (
        await timed(lambda: repo.find(query="garden"), runs),
        await timed(lambda: blob_search(db, "garden"), runs),
    )
    results["open one chat"] = (
        await timed(lambda: repo.messages(rng.choice(ids)), runs),
        await timed(lambda: blob_open(db, rng.choice(ids)), runs),
    )
    assert [c.id for c in await repo.find(query=RARE)] == [rare_id]
    return results


async def blob_open(db: Database, cid: str) -> object:
    async with db.engine.connect() as conn:
        data = (
            await conn.execute(text("SELECT data FROM blob_chats WHERE id = :id"), {"id": cid})
        ).scalar_one()
        return json.loads(data)


def report(name: str, results: dict[str, tuple[list[float], list[float]]]) -> None:
    print(f"\n{name}: ms (p50 / p99), llmux vs JSON-blob baseline")
    print(f"  {'operation':20} {'llmux':>16} {'baseline':>18} {'ratio p50':>10}")
    for op, (ours, base) in results.items():
        ratio = statistics.median(ours) / statistics.median(base)
        print(
            f"  {op:20} {pct(ours, 0.5):7.2f} / {pct(ours, 0.99):6.2f} {pct(base, 0.5):8.2f} / {pct(base, 0.99):7.2f} {ratio:9.2f}x"
        )
    worst = max(pct(ours, 0.99) for ours, _ in results.values())
    print(
        f"  worst llmux p99: {worst:.2f} ms (target < 50 ms): {'met' if worst < 50 else 'NOT met'}"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(database_url(None, Path(tmp)))
        await db.open()
        print("SQLite")
        report("SQLite", await measure(db, args.messages, args.runs))
        await db.aclose()
    if args.postgres:
        import asyncpg

        name = f"llmux_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.postgres.replace("postgresql://", "postgres://"))
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            db = Database(database_url(args.postgres.rsplit("/", 1)[0] + "/" + name, Path(tmp)))
            await db.open()
            print("\nPostgreSQL")
            report("PostgreSQL", await measure(db, args.messages, args.runs))
            await db.aclose()
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument(
        "--postgres", help="admin URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
