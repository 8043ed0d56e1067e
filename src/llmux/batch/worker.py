"""The batch worker: ``[batch] parallel`` tasks per replica that claim batches and take
them through their lifecycle, ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``
(or ``failed``, ``cancelling`` -> ``cancelled``, ``expired``).

Each task works one batch at a time, holding its lease (``storage/batches.py``) so no other
replica runs it; with the lease gone (this process died or stalled), another replica,
or this one restarted, claims it and carries on from the lines recorded. A new batch
made here wakes the worker at once; batches made on other replicas are found within
``[batch] poll_s``. While the server drains (SIGTERM) it claims nothing new; stopping
records what finished and hands the lease back, so a restart resumes at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from llmux.batch.batches import principal_from
from llmux.batch.files import Files
from llmux.batch.lines import check_file
from llmux.batch.run import (
    BatchRun,
    Keeper,
    Revoked,
    Tally,
    cancel_revoked,
    expire_rest,
    pause,
)
from llmux.batch.runner import LineRunner
from llmux.config import BatchSettings
from llmux.storage.batches import ACTIVE, BatchRow, LeaseLost, SqlBatches, dumps

log = logging.getLogger(__name__)


class BatchWorker:
    def __init__(
        self,
        repo: SqlBatches,
        files: Files,
        runner: LineRunner,
        settings: BatchSettings,
        revoked: Revoked | None = None,
    ) -> None:
        """``revoked``: why a batch's principal may no longer act (the batch is then
        cancelled), checked as the batch starts and whenever its lease is renewed."""
        self.repo, self.files, self.runner, self.settings = repo, files, runner, settings
        self.revoked = revoked
        self.tally = Tally()  # lines recorded here, read by the metrics
        self.keep = Keeper()  # writes a close waits for
        self.paused: Callable[[], bool] = lambda: False  # True: claim nothing new (a drain)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runs: dict[str, BatchRun] = {}  # batch id -> its run, while lines run

    def start(self) -> None:
        """``[batch] parallel`` loops, each working one batch at a time, so a long
        batch does not hold up everyone else's."""
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"llmux-batch-worker-{i}")
            for i in range(self.settings.parallel)
        ]

    @property
    def running(self) -> int:
        """Batches whose lines run here now."""
        return len(self._runs)

    def wake(self) -> None:
        self._wake.set()

    def notice(self, batch_id: str) -> None:
        """A batch changed here (a cancel): the run holding it looks at once."""
        run = self._runs.get(batch_id)
        if run is not None:
            run.check_now.set()
        self._wake.set()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.keep.wait()  # the last records and lease hand-backs, before the database closes

    async def _loop(self) -> None:
        while True:
            try:
                row = None if self.paused() else await self.repo.claim(self.name, self.settings.lease_s)  # fmt: skip
                if row is not None:
                    await self._work(row)
                    continue
            except Exception:
                log.exception("batch worker: claiming or working a batch failed")
            await pause(self._wake, self.settings.poll_s)
            self._wake.clear()

    async def _work(self, row: BatchRow) -> None:
        log.info("batch %s: working it (%s)", row.id, row.status)
        try:
            while row.status in ACTIVE:
                row = await self._step(row)
            log.info("batch %s: %s (%d done, %d failed)", row.id, row.status, row.completed, row.failed)  # fmt: skip
        except LeaseLost:
            log.warning("batch %s: another replica holds it now", row.id)
        finally:
            await self.keep(self.repo.release(row.id, self.name))

    async def _step(self, row: BatchRow) -> BatchRow:
        """One move through the lifecycle; the batch as it is afterwards."""
        found = await self.files.stored(row.input_file_id)
        path = found[1] if found is not None else None
        if row.status == "cancelling":
            await self._finish(row, "cancelled")
        elif row.status == "finalizing":
            await self._finish(row, "completed")
        elif path is None or not path.exists():
            message = (
                f"the input file {row.input_file_id!r} was deleted" if path is None else
                f"the bytes of input file {row.input_file_id!r} are not on this replica's disk;"
                " replicas without a shared disk keep them in the database ([batch] file_store)"
            )  # fmt: skip
            problem = {"code": "file_not_found", "message": message, "param": "input_file_id", "line": None}  # fmt: skip
            await self.repo.set_status(row.id, "failed", only_from=(row.status,), errors=dumps([problem]))  # fmt: skip
        elif time.time() >= row.expires_at:
            await self._expire(row, path)
        elif reason := await self._revoked(row):
            await cancel_revoked(self.repo, row, reason)
        elif row.status == "validating":
            await self._validate(row, path)
        else:
            await self._lines(row, path)
        return await self.repo.renew(row.id, self.name, self.settings.lease_s)

    async def _revoked(self, row: BatchRow) -> str | None:
        return await self.revoked(principal_from(row.principal)) if self.revoked else None

    async def _validate(self, row: BatchRow, path: Path) -> None:
        total, errors, count = await asyncio.to_thread(check_file, path, row.endpoint)
        if errors:
            log.info("batch %s: failed validation (%d problems)", row.id, count)
            await self.repo.set_status(row.id, "failed", only_from=("validating",), errors=dumps(errors))  # fmt: skip
        else:
            await self.repo.set_status(row.id, "in_progress", only_from=("validating",), total=total)  # fmt: skip

    async def _lines(self, row: BatchRow, path: Path) -> None:
        s = self.settings
        run = BatchRun(
            self.repo, self.runner, self.name, row, principal_from(row.principal),
            concurrency=s.concurrency, lease_s=s.lease_s, check_s=s.check_s, revoked=self.revoked,
            tally=self.tally, keep=self.keep,
        )  # fmt: skip
        self._runs[row.id] = run
        try:
            stop = await run.go(path)
        finally:
            self._runs.pop(row.id, None)
        if stop == "lost":
            raise LeaseLost(row.id)
        if stop == "done":
            await self.repo.set_status(row.id, "finalizing", only_from=("in_progress",))
        elif stop == "expire":
            await self._expire(row, path)
        # a cancel: the next step sees "cancelling"

    async def _expire(self, row: BatchRow, path: Path) -> None:
        await expire_rest(self.repo, self.name, row, path)
        await self._finish(await self.repo.renew(row.id, self.name, self.settings.lease_s), "expired")  # fmt: skip

    async def _finish(self, row: BatchRow, final: str) -> None:
        """Write the output and error files from the recorded lines, then ``final``."""
        row = await self.repo.renew(row.id, self.name, self.settings.lease_s)
        output = errors = None
        if row.completed:
            made = await self.files.write(row.owner, f"{row.id}_output.jsonl", "batch_output", self.repo.results(row.id, ok=True))  # fmt: skip
            output = made.id
        if row.failed:
            made = await self.files.write(row.owner, f"{row.id}_error.jsonl", "batch_output", self.repo.results(row.id, ok=False))  # fmt: skip
            errors = made.id
        if await self.repo.set_status(row.id, final, only_from=(row.status,), output_file_id=output, error_file_id=errors):  # fmt: skip
            await self.repo.drop_lines(row.id)
