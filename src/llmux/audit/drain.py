"""Draining the spool into the database, in batches, off the request path.

The drainer reads whole lines from where it last stopped (``drained.json`` in the slot
folder: the file, the byte offset and the last record's seq), inserts up to
``[audit] batch_size`` records in one transaction and then moves its offset on. After a
restart it resumes from the saved offset; a batch written but not yet noted is written
again, and the table's key ``(replica, seq)`` keeps that to one row each. A spool file
it has read to the end is deleted once a newer one exists (or at once, for the spool of
a slot no process holds any more). A record whose ``(replica, seq)`` the table already
holds with another hash (two replicas given the same id) is kept in
``conflicts.jsonl`` beside the spool and logged. When the database is away, the spool
grows and the drainer tries again with backoff.

Retention, when ``[audit] retention_days`` is set, runs here too, hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from llmux.audit.spool import Spool, spool_files
from llmux.errors import LlmuxError
from llmux.storage.audit import SqlAudit, line_of, row_from_line

log = logging.getLogger(__name__)
STATE = "drained.json"
CONFLICTS = "conflicts.jsonl"
REJECTED = "rejected.jsonl"
READ_BYTES = 8 << 20
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
PRUNE_S = 3600.0


@dataclass(slots=True)
class DrainState:
    file: str = ""
    offset: int = 0
    seq: int = 0  # the last drained record's
    replica: str = ""  # ... and its replica


@dataclass(slots=True)
class Batch:
    rows: list[dict[str, Any]]
    lines: list[bytes]  # each row's, to keep one aside
    file: str
    offset: int  # where the next batch starts
    at_end: bool  # nothing more in this file for now


def load_state(folder: Path) -> DrainState:
    try:
        data = json.loads((folder / STATE).read_text())
        return DrainState(
            str(data["file"]), int(data["offset"]), int(data.get("seq", 0)),
            str(data.get("replica", "")),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return DrainState()


def save_state(folder: Path, state: DrainState) -> None:
    tmp = folder / (STATE + ".tmp")
    tmp.write_text(json.dumps(asdict(state)))
    os.replace(tmp, folder / STATE)


def _keep(folder: Path, name: str, lines: list[bytes]) -> None:
    with (folder / name).open("ab") as f:
        f.write(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))


def read_batch(folder: Path, state: DrainState, limit: int) -> Batch | None:
    """Up to ``limit`` whole records from where ``state`` stopped; None: no file."""
    files = spool_files(folder)
    if not files:
        return None
    names = [p.name for p in files]
    name, offset = state.file, state.offset
    if name not in names:
        later = [n for n in names if n > name]
        name, offset = (later or names)[0], 0
    with (folder / name).open("rb") as f:
        f.seek(offset)
        data = f.read(READ_BYTES)
    lines = data.split(b"\n")[:-1][:limit]  # the last piece is unfinished (or empty)
    rows: list[dict[str, Any]] = []
    kept: list[bytes] = []
    bad: list[bytes] = []
    for line in lines:
        offset += len(line) + 1
        try:
            rows.append(row_from_line(line))
            kept.append(line)
        except (ValueError, TypeError, KeyError):
            bad.append(line)
    if bad:
        log.error("audit spool %s/%s: %d unreadable line(s) moved to %s", folder, name,
                  len(bad), REJECTED)  # fmt: skip
        _keep(folder, REJECTED, bad)
    at_end = len(lines) < limit and len(data) < READ_BYTES
    return Batch(rows, kept, name, offset, at_end)


class Drainer:
    def __init__(
        self,
        folder: Path,
        repo: SqlAudit,
        *,
        batch_size: int = 1000,
        drain_s: float = 1.0,
        retention_days: int = 0,
        orphan: bool = False,
        spool: Spool | None = None,
    ) -> None:
        self.folder = folder
        self.repo = repo
        self.batch_size = batch_size
        self.drain_s = drain_s
        self.retention_days = retention_days
        self.orphan = orphan  # a slot no process holds: its last file goes too
        self.spool = spool  # the writer of this folder, whose fresh rows need no parsing
        self.state = load_state(folder)
        self.stats = {"drained": 0, "from_memory": 0, "conflicts": 0, "failures": 0, "pruned": 0}
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0
        self._draining = asyncio.Lock()  # the loop and a flush never read one batch twice

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self, timeout: float = 15.0) -> None:
        """Drain what is left (within ``timeout``), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("audit: stopped before the spool was drained; the next start resumes")
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.drain()
                await self._prune()
                failures = 0
            except (OSError, SQLAlchemyError, LlmuxError) as exc:
                self.stats["failures"] += 1
                log.warning("audit: cannot drain the spool into the database yet: %s",
                            getattr(exc, "orig", None) or exc)  # fmt: skip
                failures += 1
            if self._closing:
                return
            delay = RETRY_S[min(failures, len(RETRY_S)) - 1] if failures else self.drain_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def drain(self) -> int:
        """Write every whole record in the spool to the table; how many were written."""
        async with self._draining:
            return await self._drain()

    async def _drain(self) -> int:
        written = 0
        while True:
            batch = self._fresh()
            if batch is None:
                batch = await asyncio.to_thread(
                    read_batch, self.folder, self.state, self.batch_size
                )
            if batch is None:
                return written
            if batch.rows:
                new = await self.repo.add_rows(batch.rows)
                if new < len(batch.rows):
                    await self._conflicts(batch)
                written += new
                self.stats["drained"] += new
            tail = batch.rows[-1] if batch.rows else None
            moved = DrainState(
                batch.file, batch.offset, tail["seq"] if tail else self.state.seq,
                tail["replica"] if tail else self.state.replica,
            )  # fmt: skip
            if moved != self.state:
                self.state = moved
                await asyncio.to_thread(save_state, self.folder, moved)
            if batch.at_end and not await asyncio.to_thread(self._next_file):
                return written

    def _fresh(self) -> Batch | None:
        """The rows the spool wrote from where the drainer stands, if it has them."""
        fresh = self.spool.fresh if self.spool is not None else None
        if not fresh:
            return None
        state = self.state
        while fresh and fresh[0].file == state.file and fresh[0].end <= state.offset:
            fresh.popleft()  # drained from the file already
        if not fresh or fresh[0].file != state.file or fresh[0].start != state.offset:
            return None
        rows: list[dict[str, Any]] = []
        offset = state.offset
        while fresh and len(rows) < self.batch_size and fresh[0].start == offset:
            item = fresh.popleft()
            rows.append(item.row)
            offset = item.end
        self.stats["from_memory"] += len(rows)
        return Batch(rows, [], state.file, offset, not fresh or fresh[0].start != offset)

    def _next_file(self) -> bool:
        """The drained file deleted when a newer one exists (or this is an orphan's
        spool); whether there is another to read."""
        names = [p.name for p in spool_files(self.folder)]
        if self.state.file not in names:
            return bool(names)
        later = [n for n in names if n > self.state.file]
        if not later and not self.orphan:
            return False
        (self.folder / self.state.file).unlink(missing_ok=True)
        self.state = DrainState(later[0] if later else "", 0, self.state.seq, self.state.replica)
        save_state(self.folder, self.state)
        return bool(later)

    async def _conflicts(self, batch: Batch) -> None:
        """Records the table holds with another hash: kept aside and reported."""
        clash: list[tuple[dict[str, Any], bytes]] = []
        lines = batch.lines or [line_of(r) for r in batch.rows]
        for replica in {r["replica"] for r in batch.rows}:
            mine = [(r, line) for r, line in zip(batch.rows, lines, strict=True)
                    if r["replica"] == replica]  # fmt: skip
            stored = await self.repo.hashes(replica, [r["seq"] for r, _ in mine])
            clash += [(r, line) for r, line in mine if stored.get(r["seq"], r["hash"]) != r["hash"]]
        if clash:
            self.stats["conflicts"] += len(clash)
            log.error("audit: %d record(s) clash with rows another writer stored under the "
                      "same replica id (%s); kept in %s. Give each replica its own "
                      "[audit] replica_id", len(clash), clash[0][0]["replica"],
                      self.folder / CONFLICTS)  # fmt: skip
            await asyncio.to_thread(_keep, self.folder, CONFLICTS, [line for _, line in clash])

    async def _prune(self) -> None:
        if self.retention_days <= 0 or time.monotonic() - self._pruned_at < PRUNE_S:
            return
        self._pruned_at = time.monotonic()
        before = time.time_ns() // 1000 - self.retention_days * 86_400_000_000
        try:
            removed = await self.repo.prune(before)
        except SQLAlchemyError as exc:
            log.warning("audit retention: the database refused to delete old records (%s); "
                        "where the append-only recipe is applied, run `llmux audit prune` "
                        "as its retention role", getattr(exc, "orig", None) or exc)  # fmt: skip
            return
        self.stats["pruned"] += removed
        if removed:
            log.info("audit retention: deleted %d record(s) older than %d days", removed,
                     self.retention_days)  # fmt: skip
