"""Usage accounting off the request path: a bounded queue, written in batches.

:meth:`UsageLog.put` never waits and never drops: the record joins the queue even when
it is full. What a full queue does instead is hold back *new* requests
(:meth:`UsageLog.room`, awaited at admission) until the writer has caught up, and count
that in :attr:`UsageLog.stats` (``full``). The writer takes up to ``[usage] batch_size``
records at a time, at least every ``flush_s``; it commits them to the ledger in one
transaction, then settles their budget holds (``budgets.py``; a settle happens once per
request id, however often it is tried). A failed commit keeps the batch and tries again with backoff;
:meth:`UsageLog.aclose` writes whatever is left before the process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llmux.config import UsageSettings
from llmux.limits.budgets import BudgetCounters, Hold
from llmux.storage.usage import SqlUsage, UsageRecord

log = logging.getLogger(__name__)
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class Entry:
    record: UsageRecord
    holds: list[Hold] = field(default_factory=list)  # with the real cost, per budget
    charges: list[int] = field(default_factory=list)


class UsageLog:
    def __init__(
        self, repo: SqlUsage, settings: UsageSettings, budgets: BudgetCounters | None = None
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.budgets = budgets
        self._queue: deque[Entry] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._writing = asyncio.Lock()  # the writer and a flush never take one batch twice
        self.stats: dict[str, int] = {"written": 0, "duplicates": 0, "full": 0, "failures": 0}

    @property
    def queued(self) -> int:
        return len(self._queue)

    def put(self, entry: Entry) -> None:
        self._queue.append(entry)
        if len(self._queue) >= self.settings.queue_size and self._room.is_set():
            self._room.clear()
            self.stats["full"] += 1
            log.warning("the usage queue is full (%d records); new requests wait", self.queued)
        if len(self._queue) >= self.settings.batch_size:
            self._wake.set()

    async def room(self) -> None:
        """Wait while the queue is full (backpressure on new requests)."""
        if not self._room.is_set():
            await self._room.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            if len(self._queue) < self.settings.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.flush_s)
            if not self._queue:
                continue
            try:
                await self.write_batch()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database failing: keep, retry
                self.stats["failures"] += 1
                log.warning("could not write %d usage records (will retry): %s", self.queued, exc)
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1

    async def write_batch(self) -> int:
        """Commit the oldest batch, then settle its budgets; the batch leaves the queue
        only once committed."""
        async with self._writing:
            return await self._write_batch()

    async def _write_batch(self) -> int:
        batch = list(itertools.islice(self._queue, self.settings.batch_size))
        if not batch:
            return 0
        new = await self.repo.add([e.record for e in batch])
        for _ in batch:
            self._queue.popleft()
        if len(self._queue) < self.settings.queue_size:
            self._room.set()
        self.stats["written"] += new
        self.stats["duplicates"] += len(batch) - new
        await self._settle(batch)
        return len(batch)

    async def _settle(self, batch: list[Entry]) -> None:
        """Settle every committed record's holds, duplicates too: a record that was
        committed before a failure may not have been settled, and a second settle of
        one request id changes nothing."""
        if self.budgets is None:
            return
        for entry in batch:
            if not entry.holds:
                continue
            charges = list(zip(entry.holds, entry.charges, strict=True))
            try:
                await self.budgets.settle(entry.record.id, charges)
            except Exception as exc:  # noqa: BLE001 - the ledger has it; reconcile mends it
                log.warning("could not settle the budget of %s: %s", entry.record.id, exc)

    async def flush(self) -> None:
        """Write everything queued now (tests, shutdown)."""
        while self._queue:
            await self.write_batch()

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for delay in (0.0, *RETRY_S):
            if not self._queue:
                return
            await asyncio.sleep(delay)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the database failing: try again
                log.warning("could not write the last usage records: %s", exc)
        if self._queue:
            log.error("%d usage records could not be written before stopping", self.queued)

    def info(self) -> dict[str, Any]:
        return {"queued": self.queued, "capacity": self.settings.queue_size, **self.stats}
