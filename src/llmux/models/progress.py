"""Progress of model transfers, and jobs whose progress several clients can watch.

Pull, push and create report :class:`Progress` lines, Ollama's
``{"status", "digest"?, "total"?, "completed"?}``. A :class:`SharedJob` runs one
operation in its own task and lets any number of watchers follow it: a watcher that
joins late sees the latest line of every status so far, then every change. When the
last watcher leaves (a client hung up), the task is cancelled, and what it wrote to
disk stays for the next attempt to resume from.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Progress:
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.digest is not None:
            out["digest"] = self.digest
        if self.total is not None:
            out["total"] = self.total
        if self.completed is not None:
            out["completed"] = self.completed
        return out


Report = Callable[[Progress], None]
Operation = Callable[[Report], Awaitable[None]]


class SharedJob:
    """One running operation; :meth:`watch` yields its progress to each watcher."""

    def __init__(self, operation: Operation, on_finish: Callable[[SharedJob], None]) -> None:
        self._lines: dict[str, tuple[int, Progress]] = {}  # latest line per status
        self._seq = 0
        self._changed = asyncio.Event()
        self._watchers = 0
        self._on_finish = on_finish
        self.error: BaseException | None = None
        self.done = False
        self.abandoned = False  # every watcher left; the task is being cancelled
        self._task = asyncio.create_task(self._run(operation))

    def _report(self, line: Progress) -> None:
        self._seq += 1
        self._lines.pop(line.status, None)
        self._lines[line.status] = (self._seq, line)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _run(self, operation: Operation) -> None:
        try:
            await operation(self._report)
        except BaseException as exc:  # handed to every watcher
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.done = True
            self._on_finish(self)
            self._wake()

    async def watch(self) -> AsyncGenerator[Progress, None]:
        self._watchers += 1
        seen = 0
        try:
            while True:
                changed = self._changed
                fresh = sorted((i for i in self._lines.values() if i[0] > seen), key=lambda i: i[0])
                for s, line in fresh:
                    seen = s
                    yield line
                if self.done and not any(s > seen for s, _ in self._lines.values()):
                    if self.error is not None:
                        raise self.error
                    return
                await changed.wait()
        finally:
            self._watchers -= 1
            if self._watchers == 0 and not self.done:
                self.abandoned = True
                self._task.cancel()

    async def finished(self) -> None:
        """Wait until the task has ended (however it ended)."""
        await asyncio.wait({self._task})


class JobBoard:
    """Running jobs by key (a model name): a second request for the same key joins the
    job already running instead of starting another."""

    def __init__(self) -> None:
        self._jobs: dict[str, SharedJob] = {}

    def watch(self, key: str, operation: Operation) -> AsyncGenerator[Progress, None]:
        job = self._jobs.get(key)
        if job is None or job.done or job.abandoned:
            job = SharedJob(operation, lambda j: self._finished(key, j))
            self._jobs[key] = job
        return job.watch()

    def _finished(self, key: str, job: SharedJob) -> None:
        if self._jobs.get(key) is job:
            del self._jobs[key]
