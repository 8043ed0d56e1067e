"""The ``[audit]`` table: the append-only audit trail (docs/observability.md#audit-trail)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AuditSettings(BaseModel):
    """The audit trail: one record per model call and per administrative action, in a
    hash chain, spooled to a local file and drained into the database."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="keep the audit trail (one record per model call and admin action)",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="where records are spooled before the database has them;"
        " default $LLMUX_HOME/audit",
    )
    replica_id: str = Field(
        default="",
        max_length=200,
        description="this replica's name in the records; default: the host name and a"
        " digest of the spool folder (stable across restarts)",
    )
    fsync_s: float = Field(
        default=0.1,
        gt=0,
        le=60,
        description="the longest a spooled record waits to be flushed to disk (fsync);"
        " every record written meanwhile shares that one fsync",
    )
    wait_for_fsync: bool = Field(
        default=False,
        description="a response ends only once its record is fsync'd (survives a power"
        " loss; adds the disk's flush time to each reply); false: its record is written to"
        " the operating system before the response ends (survives the process being"
        " killed)",
    )
    rotate_mib: int = Field(
        default=64, ge=1, description="a spool file is closed and a new one begun at this size"
    )
    drain_s: float = Field(
        default=1.0, gt=0, le=300, description="how often the spool is drained into the database"
    )
    batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="records per database transaction"
    )
    retention_days: int = Field(
        default=0,
        ge=0,
        description="records older than this are deleted (hourly; a retention anchor keeps"
        " the chain verifiable); 0: kept forever",
    )
    record_admin: bool = Field(
        default=True,
        description="also one record per administrative action (keys, users, clients,"
        " tokens, models, limits, budgets)",
    )

    def folder(self, home: Path) -> Path:
        return (self.spool_dir or home / "audit").expanduser()
