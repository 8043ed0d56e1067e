"""The audit trail as the server runs it: the spool, the drainer and the policy, built
from ``[audit]`` by :func:`build_audit` and started and stopped with the services."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from llmux.audit.drain import Drainer
from llmux.audit.policy import SYNCED, Audit
from llmux.audit.settings import AuditSettings
from llmux.audit.spool import (
    LOCK,
    MAX_SLOTS,
    Spool,
    Written,
    claim_slot,
    default_replica,
    spool_files,
)
from llmux.auth.secrets import Keyring
from llmux.config import Settings
from llmux.core.context import RequestContext
from llmux.storage.audit import SqlAudit
from llmux.storage.database import Database

log = logging.getLogger(__name__)


class AuditTrail:
    def __init__(self, settings: AuditSettings, home: Path, repo: SqlAudit, key: bytes) -> None:
        self.settings = settings
        self.base = settings.folder(home)
        self.repo = repo
        self.key = key
        self.spool = Spool(fsync_s=settings.fsync_s, rotate_bytes=settings.rotate_mib << 20)
        self.policy = Audit(self.spool, key, wait_for_fsync=settings.wait_for_fsync)
        self.drainer: Drainer | None = None
        self._lock: int | None = None
        self._adopting: asyncio.Task[None] | None = None

    @property
    def replica(self) -> str:
        return self.spool.replica

    async def start(self) -> None:
        """Take a spool slot, continue the chain, start draining (and drain the spools
        of slots no process holds)."""
        folder, slot, self._lock = await asyncio.to_thread(claim_slot, self.base)
        replica = self.settings.replica_id or default_replica(self.base)
        if slot:
            replica = f"{replica}-{slot}"
        stored = await self.repo.head(replica)
        await asyncio.to_thread(self.spool.open, folder, replica, stored)
        self.drainer = self._drainer(folder, orphan=False)
        self.drainer.spool = self.spool
        self.drainer.start()
        self._adopting = asyncio.get_running_loop().create_task(self._adopt(slot))

    def _drainer(self, folder: Path, *, orphan: bool) -> Drainer:
        s = self.settings
        return Drainer(folder, self.repo, batch_size=s.batch_size, drain_s=s.drain_s,
                       retention_days=s.retention_days if not orphan else 0,
                       orphan=orphan)  # fmt: skip

    async def _adopt(self, mine: int) -> None:
        """Drain what processes that are gone left in other slots."""
        for slot in range(MAX_SLOTS):
            folder = self.base / str(slot)
            if slot == mine or not folder.is_dir() or not spool_files(folder):
                continue
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live process's
            try:
                drained = await self._drainer(folder, orphan=True).drain()
                log.info("audit: drained %d record(s) left in spool slot %d", drained, slot)
            except Exception as exc:  # noqa: BLE001 - retried at the next start
                log.warning("audit: cannot drain spool slot %d yet: %s", slot, exc)
            finally:
                os.close(fd)

    async def aclose(self) -> None:
        """The last fsync, the spool drained into the database (within 15 s), the slot
        given back."""
        if self._adopting is not None:
            self._adopting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._adopting
        await asyncio.to_thread(self.spool.close)
        if self.drainer is not None:
            await self.drainer.aclose()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- for the admin layer and the routes -----------------------------------------------

    def record(self, ctx: RequestContext | None, fields: dict[str, Any]) -> Written:
        """Append a record (an admin action); with ``wait_for_fsync`` its fsync's future
        goes into the context for the response's end to wait for."""
        record = self.spool.append(fields)
        if ctx is not None and self.settings.wait_for_fsync:
            synced = self.spool.synced(record.seq)
            if synced is not None:
                ctx.facts[SYNCED] = synced
        return record

    def drained(self) -> dict[str, int]:
        """How far this replica's drainer has got, for ``verify`` to hold the table to."""
        state = self.drainer.state if self.drainer is not None else None
        return {state.replica: state.seq} if state is not None and state.seq else {}

    def written(self) -> int:
        """Records this replica has written (its sequence number), for the metrics."""
        return self.spool.seq

    @property
    def backlog(self) -> int:
        """Records spooled but not yet in the database (this replica's)."""
        drained = self.drainer.state.seq if self.drainer is not None else 0
        return max(0, self.spool.seq - drained)

    def info(self) -> dict[str, Any]:
        stats = self.drainer.stats if self.drainer is not None else {}
        return {"replica": self.replica, "seq": self.spool.seq, "synced": self.spool.synced_seq,
                "backlog": self.backlog, "spool": str(self.spool.folder),
                "failing": self.spool.failing, **stats}  # fmt: skip

    async def flush(self) -> None:
        """Drain now (tests, and the routes' ``?fresh=1``)."""
        if self.drainer is not None:
            await self.drainer.drain()


def build_audit(settings: Settings, db: Database | None, keyring: Keyring) -> AuditTrail | None:
    """The trail from ``[audit]``, over ``db``, with the keyring's audit key; None when
    it is off or there is no database."""
    audit = settings.audit
    if not audit.enabled or db is None:
        return None
    return AuditTrail(audit, settings.home_dir, SqlAudit(db), keyring.audit)
