"""Running the lines of one batch that this replica holds the lease of.

Lines not yet finished are read from the input file a page at a time (off the event
loop) and run ``concurrency`` at a time, so the engine batches them and upstreams get
parallel requests; the engine admits them after interactive requests
(``priority="batch"``). Finished lines are recorded in small groups, each in one
transaction that commits only while the lease is still this replica's: a line is
recorded once, and a restart runs only the lines that were not. A line refused for a
rate limit or a full queue waits (``Retry-After``) and runs again; any other error is
that line's answer, in the error file.

A second task renews the lease every ``check_s`` seconds and reads the batch again: a
cancel, the window's end or a lost lease stops the run within that time, the lines in
flight are cancelled (the engine stops generating them) and what finished stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeVar

from llmux.batch.lines import Line, Problem, answered, numbered, parse, refused
from llmux.batch.runner import LineRunner
from llmux.core.context import Principal, RequestContext, new_request_id
from llmux.errors import LlmuxError, RateLimited, ServerBusy
from llmux.protocols.openai.errors import error_object
from llmux.storage.batches import BatchRow, LeaseLost, LineResult, SqlBatches, dumps

log = logging.getLogger(__name__)
T = TypeVar("T")
Stop = Literal["done", "cancel", "expire", "lost"]
# why the batch's principal may no longer act (a revoked key, a disabled user), or None
Revoked = Callable[[Principal], Awaitable[str | None]]
PAGE = 256  # lines read from the file at a time
FLUSH_LINES = 64  # finished lines recorded together at most
FLUSH_S = 0.5  # and at least this often
MAX_WAIT_S = 30.0  # the longest wait before a refused line runs again
INTERNAL = "internal error while running the line; see the server log"


class Keeper:
    """Database writes that must not be cut off halfway: each runs as a task of its own
    (shielded from the caller's cancel), and :meth:`wait` lets the worker's close wait
    for those still running before the database is closed under them."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def __call__(self, work: Awaitable[T]) -> Awaitable[T]:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return asyncio.shield(task)

    async def wait(self) -> None:
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


@dataclass(slots=True)
class Tally:
    """Lines this replica recorded, for the metrics (``llmux_batch_lines_total``)."""

    completed: int = 0
    failed: int = 0


class BatchRun:
    def __init__(
        self,
        repo: SqlBatches,
        runner: LineRunner,
        worker: str,
        row: BatchRow,
        principal: Principal,
        *,
        concurrency: int,
        lease_s: float,
        check_s: float,
        revoked: Revoked | None = None,
        tally: Tally | None = None,
        keep: Keeper | None = None,
    ) -> None:
        self.repo, self.runner, self.worker, self.row = repo, runner, worker, row
        self.tally = tally if tally is not None else Tally()
        self.keep = keep if keep is not None else Keeper()
        self.principal, self.revoked = principal, revoked
        self.concurrency, self.lease_s, self.check_s = concurrency, lease_s, check_s
        self.stop: Stop | None = None
        self.check_now = asyncio.Event()  # set on a cancel from this replica
        self._inflight: set[asyncio.Task[None]] = set()
        self._buffer: list[LineResult] = []
        self._flush_now = asyncio.Event()
        self._flushing = asyncio.Lock()

    async def go(self, path: Path) -> Stop:
        done = await self.repo.finished_lines(self.row.id)
        watch = asyncio.create_task(self._watch())
        flusher = asyncio.create_task(self._flusher())
        slots = asyncio.Semaphore(self.concurrency)
        try:
            async with contextlib.aclosing(pending(path, self.row.endpoint, done)) as todo:
                async for line in todo:
                    await slots.acquire()
                    if self.stop is not None:
                        slots.release()
                        break
                    task = asyncio.create_task(self._line(line))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                    task.add_done_callback(lambda _: slots.release())
            while self._inflight:
                await asyncio.wait(set(self._inflight))
        finally:
            for task in (watch, flusher, *self._inflight):
                task.cancel()
            await asyncio.gather(watch, flusher, *self._inflight, return_exceptions=True)
            if self.stop != "lost":
                await self.keep(self._flush())
        return self.stop or "done"

    def _halt(self, why: Stop) -> None:
        if self.stop is None:
            self.stop = why
            for task in self._inflight:
                task.cancel()

    async def _watch(self) -> None:
        """Renew the lease; notice a cancel, the window's end, a lost lease."""
        while True:
            await pause(self.check_now, self.check_s)
            self.check_now.clear()
            try:  # shielded: a transaction is never cut off halfway (the run's end cancels this)
                row = await self.keep(self.repo.renew(self.row.id, self.worker, self.lease_s))
            except LeaseLost:
                log.warning("batch %s: another replica took its lease; stopping", self.row.id)
                self._halt("lost")
                return
            except Exception:
                log.exception("batch %s: renewing its lease failed", self.row.id)
                continue
            if row.status == "cancelling" or await self.keep(self._revoked()):
                self._halt("cancel")
            elif time.time() >= row.expires_at:
                self._halt("expire")

    async def _revoked(self) -> bool:
        """Cancel the batch when its principal may no longer act."""
        reason = await self.revoked(self.principal) if self.revoked is not None else None
        if reason is None:
            return False
        log.warning("batch %s: cancelled: %s", self.row.id, reason)
        await cancel_revoked(self.repo, self.row, reason)
        return True

    async def _line(self, line: Line) -> None:
        if line.problem is not None:
            self._add(refused(line, new_request_id(), line.problem))
            return
        self._add(await self._request(line))

    async def _request(self, line: Line) -> LineResult:
        assert line.body is not None
        delay = 1.0
        while True:
            ctx = RequestContext(
                api="openai", route=self.row.endpoint, principal=self.principal, priority="batch"
            )
            try:
                body = await self.runner.run(ctx, self.row.endpoint, line.body)
                return answered(line, ctx.request_id, 200, body)
            except (RateLimited, ServerBusy) as exc:  # wait for room, then again
                await asyncio.sleep(min(exc.retry_after or delay, MAX_WAIT_S))
                delay = min(delay * 2, MAX_WAIT_S)
            except LlmuxError as exc:
                return answered(line, ctx.request_id, exc.status, error_object(exc))
            except Exception:
                log.exception("batch %s: line %d failed", self.row.id, line.number)
                return answered(line, ctx.request_id, 500, error_object(LlmuxError(INTERNAL)))

    # -- recording -----------------------------------------------------------------------
    def _add(self, result: LineResult) -> None:
        self._buffer.append(result)
        if len(self._buffer) >= FLUSH_LINES:
            self._flush_now.set()

    async def _flusher(self) -> None:
        while True:
            await pause(self._flush_now, FLUSH_S)
            self._flush_now.clear()
            try:  # shielded: a write that may have committed is never cut off
                await self.keep(self._flush())
            except LeaseLost:
                self._halt("lost")
                return
            except Exception:
                log.exception("batch %s: recording finished lines failed", self.row.id)

    async def _flush(self) -> None:
        """Record the finished lines; one write at a time (the lock), so the last flush
        waits for one in flight."""
        async with self._flushing:
            taken, self._buffer = self._buffer, []
            try:
                await self.repo.record(self.row.id, self.worker, taken)
            except LeaseLost:
                raise
            except BaseException:
                self._buffer[:0] = taken
                raise
            ok = sum(1 for r in taken if r.ok)
            self.tally.completed += ok
            self.tally.failed += len(taken) - ok


async def pause(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event``, at most ``seconds``. Not ``asyncio.wait_for``: on Python 3.11
    it can swallow a cancel that comes as the event is set, and a loop cancelled that
    way never ends (the run, and the server's shutdown, would wait for it forever)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def pending(path: Path, endpoint: str, done: set[int]) -> AsyncGenerator[Line]:
    """The file's lines not in ``done``, parsed a page at a time in a thread."""
    lines = numbered(path)

    def page() -> tuple[bool, list[Line]]:
        raw = list(islice(lines, PAGE))
        return bool(raw), [parse(n, r, endpoint) for n, r in raw if n not in done]

    try:
        while True:
            more, chunk = await asyncio.to_thread(page)
            if not more:
                return
            for line in chunk:
                yield line
    finally:
        lines.close()


async def cancel_revoked(repo: SqlBatches, row: BatchRow, reason: str) -> None:
    error = {"code": "credential_revoked", "message": f"cancelled: {reason}", "param": None, "line": None}  # fmt: skip
    await repo.set_status(row.id, "cancelling", only_from=("validating", "in_progress"), errors=dumps([error]))  # fmt: skip


async def expire_rest(repo: SqlBatches, worker: str, row: BatchRow, path: Path) -> None:
    """Write every line that did not finish before the window closed to the error file
    (``batch_expired``), as OpenAI does."""
    done = await repo.finished_lines(row.id)
    problem = Problem("batch_expired", "the batch's completion window ended before this line ran")  # fmt: skip
    group: list[LineResult] = []
    async for line in pending(path, row.endpoint, done):
        group.append(refused(line, new_request_id(), problem))
        if len(group) >= 1000:
            await repo.record(row.id, worker, group)
            group = []
    await repo.record(row.id, worker, group)
