"""Walking the chain: ``llmux audit verify``.

For each replica, rows in seq order, starting where retention left the chain (its
anchor: the seq and hash of the last deleted record) or at seq 1. Every row must

* hash to its ``hash`` (SHA-256 of the stored canonical JSON): else it was **edited**;
* agree with its own record in every column the filters use: else **edited** too;
* follow the row before: ``seq`` one more (else a **gap**: rows deleted) and
  ``prev_hash`` equal to that row's hash (else a **broken link**: a row replaced).

Deleting the newest rows leaves no trace in the table itself; ``expected`` (the seq the
local spool has drained up to, per replica) catches that on the server's own machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from llmux.audit.record import GENESIS, AuditRecord, canonical, parse_iso_us
from llmux.storage.audit import SqlAudit, StoredRow, row_of

ProblemKind = Literal["edited", "gap", "broken_link", "unreadable", "missing_tail"]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    replica: str
    seq: int
    detail: str

    def __str__(self) -> str:
        return f"{self.replica} seq {self.seq}: {self.kind.replace('_', ' ')}: {self.detail}"


@dataclass(slots=True)
class ReplicaReport:
    replica: str
    first: int = 0
    last: int = 0
    rows: int = 0
    head: str = GENESIS  # the last row's hash
    anchor: int = 0  # retention deleted up to this seq
    problems: list[Problem] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    replicas: list[ReplicaReport] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for r in self.replicas for p in r.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def public(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "replicas": [
                {"replica": r.replica, "first": r.first, "last": r.last, "rows": r.rows,
                 "head": r.head, "anchor": r.anchor,
                 "problems": [{"kind": p.kind, "seq": p.seq, "detail": p.detail}
                              for p in r.problems]}
                for r in self.replicas
            ],
        }  # fmt: skip


COLUMNS = ("replica", "seq", "time_us", "kind", "request_id", "principal", "principal_name",
           "model", "served", "status", "hash")  # fmt: skip


def check_row(row: StoredRow) -> Problem | None:
    """A row against its own hash and record."""
    text = row.record
    if hashlib.sha256(text.encode()).hexdigest() != row.hash:
        return Problem("edited", row.replica, row.seq, "the record does not match its hash")
    try:
        data = json.loads(text)
        record = AuditRecord.from_json({**data, "hash": row.hash})
        parse_iso_us(record.ts)
    except (ValueError, TypeError) as exc:
        return Problem("unreadable", row.replica, row.seq, f"the record does not parse: {exc}")
    want = row_of(record)
    changed = [c for c in COLUMNS if want[c] != getattr(row, c)]
    if changed:
        return Problem("edited", row.replica, row.seq,
                       f"column(s) {', '.join(changed)} differ from the hashed record")  # fmt: skip
    return None


def follow(report: ReplicaReport, row: StoredRow, prev: tuple[int, str] | None) -> None:
    """``row`` after ``prev`` (seq, hash): gaps and links."""
    expected = prev[0] + 1 if prev else 1
    if row.seq > expected:
        span = f"{expected}" if row.seq == expected + 1 else f"{expected}..{row.seq - 1}"
        where = "after the retention anchor" if prev and prev[0] == report.anchor else ""
        detail = f"record(s) {span} missing {where}".rstrip()
        report.problems.append(Problem("gap", row.replica, expected, detail))
        return
    want = prev[1] if prev else GENESIS
    try:
        linked = json.loads(row.record).get("prev_hash")
    except ValueError:
        return  # reported as unreadable
    if linked != want:
        detail = f"prev_hash {str(linked)[:12]}... is not seq {expected - 1}'s hash"
        report.problems.append(Problem("broken_link", row.replica, row.seq, detail))


async def verify_replica(repo: SqlAudit, replica: str, expected: int | None) -> ReplicaReport:
    report = ReplicaReport(replica)
    anchor = await repo.anchor(replica)
    prev: tuple[int, str] | None = anchor
    if anchor is not None:
        report.anchor = anchor[0]
    async for row in repo.chain(replica):
        if anchor is not None and row.seq <= anchor[0]:
            continue  # pruned already, written again by a late drain
        report.rows += 1
        report.first = report.first or row.seq
        problem = check_row(row)
        if problem is not None:
            report.problems.append(problem)
        follow(report, row, prev)
        prev = (row.seq, row.hash)
        report.last, report.head = row.seq, row.hash
    if expected is not None and report.last < expected:
        report.problems.append(
            Problem("missing_tail", replica, report.last + 1,
                    f"the spool drained up to seq {expected}, the table ends at {report.last}")
        )  # fmt: skip
    return report


async def verify(
    repo: SqlAudit, replicas: Iterable[str] | None = None, expected: dict[str, int] | None = None
) -> Report:
    """Every replica's chain (or those named)."""
    names = list(replicas) if replicas is not None else await repo.replicas()
    expected = expected or {}
    report = Report()
    for name in sorted(set(names) | set(expected) if replicas is None else names):
        report.replicas.append(await verify_replica(repo, name, expected.get(name)))
    return report


def verify_export(lines: Iterable[bytes | str]) -> Report:
    """An export (JSON lines, each a record with its ``hash``) checked offline: each
    line against its hash, and each replica's lines as a chain from its first."""
    chains: dict[str, list[StoredRow]] = {}
    bad: list[Problem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            stored = str(data.pop("hash"))
            record = AuditRecord.from_json({**data, "hash": stored})
            columns = dict(row_of(record), record=canonical(data).decode(), hash=stored)
        except (ValueError, TypeError, KeyError) as exc:
            bad.append(Problem("unreadable", "?", number, f"line {number}: {exc}"))
            continue
        chains.setdefault(record.replica, []).append(StoredRow(**columns))
    report = Report()
    for replica, rows in sorted(chains.items()):
        part = ReplicaReport(replica)
        prev: tuple[int, str] | None = None
        for row in sorted(rows, key=lambda r: r.seq):
            problem = check_row(row)
            if problem is not None:
                part.problems.append(problem)
            if prev is not None:
                follow(part, row, prev)
            part.rows += 1
            part.first = part.first or row.seq
            prev = (row.seq, row.hash)
            part.last, part.head = row.seq, row.hash
        report.replicas.append(part)
    if bad:
        report.replicas.append(ReplicaReport("?", problems=bad))
    return report
