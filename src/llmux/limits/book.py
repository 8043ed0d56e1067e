"""The quota definitions kept in SQL (per-scope limits, budgets, users' teams), read
into memory and reread every ``[limits] refresh_s`` in the background, so a request
never waits for the database; a change made on this replica applies at once, one made
on another replica within ``refresh_s``."""

from __future__ import annotations

import asyncio
import logging
import time

from llmux.storage.usage import BudgetRow, QuotaRow, SqlUsage

log = logging.getLogger(__name__)


class QuotaBook:
    def __init__(self, repo: SqlUsage | None, refresh_s: float = 5.0) -> None:
        self.repo = repo
        self.refresh_s = refresh_s
        self.quotas: dict[str, QuotaRow] = {}
        self.budgets: dict[str, list[BudgetRow]] = {}  # scope -> its budgets
        self.teams: dict[str, str] = {}  # user id -> team
        self._read_at: float | None = None
        self._reading: asyncio.Task[None] | None = None

    @property
    def has_budgets(self) -> bool:
        return bool(self.budgets)

    async def current(self) -> QuotaBook:
        """The book: read once at first use, then reread in the background when stale."""
        if self.repo is None:
            return self
        if self._read_at is None:
            await self.reload()
        elif time.monotonic() - self._read_at > self.refresh_s and self._reading is None:
            self._reading = asyncio.ensure_future(self._background())
        return self

    async def _background(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # noqa: BLE001 - keep the last good book; retry after refresh_s
            log.warning("could not reread the limits and budgets: %s", exc)
            self._read_at = time.monotonic()
        finally:
            self._reading = None

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
        self._read_at = time.monotonic()

    async def aclose(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
