"""The quota definitions kept in SQL (per-scope limits, budgets, users' teams), read
into memory at first use and then reread every ``[limits] refresh_s`` by a background
task, so a request never waits for the database; a change made on this replica applies
at once, one made on another replica within ``refresh_s``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from llmux.storage.usage import BudgetRow, QuotaRow, SqlUsage

log = logging.getLogger(__name__)


class QuotaBook:
    def __init__(self, repo: SqlUsage | None, refresh_s: float = 5.0) -> None:
        self.repo = repo
        self.refresh_s = refresh_s
        self.quotas: dict[str, QuotaRow] = {}
        self.budgets: dict[str, list[BudgetRow]] = {}  # scope -> its budgets
        self.teams: dict[str, str] = {}  # user id -> team
        self.memo: dict[tuple[Any, ...], Any] = {}  # rules.py's, emptied on every reread
        self._read_at: float | None = None
        self._reading: asyncio.Task[None] | None = None

    @property
    def has_budgets(self) -> bool:
        return bool(self.budgets)

    async def current(self) -> QuotaBook:
        """The book: read at first use, then kept fresh by the background task."""
        if self.repo is None:
            return self
        if self._read_at is None:
            await self.reload()
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._keep_fresh())
        return self

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - keep the last good book; try again
                log.warning("could not reread the limits and budgets: %s", exc)

    async def reload(self) -> None:
        if self.repo is None:
            return
        quotas = await self.repo.quotas()
        budgets = await self.repo.budgets()
        teams = await self.repo.teams()
        self.quotas = {q.scope: q for q in quotas}
        grouped: dict[str, list[BudgetRow]] = {}
        for b in budgets:
            grouped.setdefault(b.scope, []).append(b)
        self.budgets = grouped
        self.teams = teams
        self.memo = {}
        self._read_at = time.monotonic()

    async def aclose(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
