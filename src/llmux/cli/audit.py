"""``llmux audit tail|search|verify|prune|recipe``: the audit trail, read from the
database ``llmux serve`` is configured with (run them on the server's machine, or
anywhere with its configuration). ``verify`` exits 1 when it finds a gap or an edit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from llmux.cli.common import ConfigOpt, err, fail, out, settings, with_database

T = TypeVar("T")
app = typer.Typer(help="The audit trail: tail, search, verify.", no_args_is_help=True)

SinceOpt = Annotated[str | None, typer.Option(help="ISO 8601 time or unix seconds")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]


def _run(config: Path | None, work: Callable[[Any], Awaitable[T]], url: str | None = None) -> T:
    from llmux.storage.audit import SqlAudit

    return with_database(settings(config), lambda db: work(SqlAudit(db)), url)


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False, sort_keys=True), markup=False)
        return
    table = Table("TIME", "REPLICA:SEQ", "KIND", "PRINCIPAL", "CLIENT", "OPERATION", "MODEL",
                  "STATUS", "TOKENS", "MS", "REQUEST", box=None)  # fmt: skip
    for r in rows:
        what = r.get("route") if r.get("kind") == "model" else r.get("operation")
        target = " ".join(f"{k}={v}" for k, v in (r.get("target") or {}).items())
        tokens = f"{r.get('prompt_tokens', 0)}+{r.get('completion_tokens', 0)}"
        table.add_row(
            str(r.get("ts", ""))[:23], f"{r.get('replica')}:{r.get('seq')}", str(r.get("kind")),
            escape(str(r.get("principal_name"))), str(r.get("client_ip") or "-"),
            escape(f"{what} {target}".strip()), escape(str(r.get("model") or "-")),
            str(r.get("status")) + (f" {r['error']}" if r.get("error") else ""), tokens,
            f"{(r.get('latency_us') or 0) / 1000:.1f}", str(r.get("request_id")),
        )  # fmt: skip
    out.print(table)


@app.command()
def search(
    since: SinceOpt = None,
    until: SinceOpt = None,
    principal: Annotated[str | None, typer.Option(help="kind:id, an id or a name")] = None,
    model: Annotated[str | None, typer.Option(help="asked for or served")] = None,
    status: Annotated[str | None, typer.Option(help="200, 4xx or 500-599")] = None,
    kind: Annotated[str | None, typer.Option(help="model or admin")] = None,
    request_id: Annotated[str | None, typer.Option("--request-id")] = None,
    limit: Annotated[int, typer.Option(help="records, newest first")] = 50,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Records matching the filters, newest first."""
    from llmux.audit.query import Search

    async def work(repo: Any) -> list[dict[str, Any]]:
        s = Search.parse(since=since, until=until, principal=principal, model=model,
                         status=status, kind=kind, request_id=request_id, limit=limit)  # fmt: skip
        rows, _ = await repo.query(s.where, s.limit)
        return list(rows)

    _show(list(reversed(_run(config, work))), as_json)


@app.command()
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", help="how many")] = 20,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The newest records (and, with -f, each new one as it reaches the database)."""
    from llmux.storage.audit import Filter

    async def work(repo: Any) -> None:
        rows, _ = await repo.query(Filter(), max(1, min(lines, 1000)))
        rows.reverse()
        _show(rows, as_json)
        seen = {(r["replica"], r["seq"]) for r in rows}
        since = min((r["ts"] for r in rows), default=None)
        while follow:
            await asyncio.sleep(1.0)
            start = _us(since) if since else time.time_ns() // 1000 - 5_000_000
            fresh, _ = await repo.query(Filter(since_us=start), 1000)
            new = [r for r in reversed(fresh) if (r["replica"], r["seq"]) not in seen]
            if new:
                _show(new, as_json)
                seen |= {(r["replica"], r["seq"]) for r in new}
                since = new[-1]["ts"]

    with contextlib.suppress(KeyboardInterrupt):
        _run(config, work)


def _us(ts: str) -> int:
    from llmux.audit.record import parse_iso_us

    return parse_iso_us(ts) - 5_000_000  # records of other replicas may land late


def _local_drained(home: Path, base: Path) -> dict[str, int]:
    """How far each spool on this machine has been drained, by replica."""
    from llmux.audit.drain import load_state

    found: dict[str, int] = {}
    for folder in sorted(base.glob("*")) if base.is_dir() else []:
        state = load_state(folder)
        if state.replica and state.seq:
            found[state.replica] = max(found.get(state.replica, 0), state.seq)
    return found


@app.command()
def verify(
    file: Annotated[Path | None, typer.Option("--file", help="check an export (JSONL) "
                                              "offline instead of the database")] = None,
    replica: Annotated[list[str] | None, typer.Option(help="only this replica (repeatable)")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:  # fmt: skip
    """Walk each replica's chain: report gaps (deleted records), edited records and
    broken links. Exit status 1 when there is any."""
    from llmux.audit.verify import Report, verify, verify_export

    report: Report
    if file is not None:
        try:
            with file.open("rb") as f:
                report = verify_export(f)
        except OSError as exc:
            fail(f"cannot read {file}: {exc}")
    else:
        conf = settings(config)
        local = _local_drained(conf.home_dir, conf.audit.folder(conf.home_dir))
        report = _run(config, lambda repo: verify(repo, replica, None if replica else local))
    if as_json:
        out.print(json.dumps(report.public(), indent=2), markup=False)
    else:
        for r in report.replicas:
            state = "ok" if not r.problems else f"{len(r.problems)} problem(s)"
            start = f" (retention anchor at {r.anchor})" if r.anchor else ""
            out.print(f"{escape(r.replica)}: seq {r.first}..{r.last}, {r.rows} record(s)"
                      f"{start}: {state}")  # fmt: skip
            for p in r.problems:
                out.print(f"  [red]{escape(str(p))}[/red]")
        if not report.replicas:
            out.print("no audit records")
    if not report.ok:
        err.print(f"[red]audit verify: {len(report.problems)} problem(s) found[/red]")
        raise typer.Exit(1)


@app.command()
def prune(
    days: Annotated[int, typer.Option(help="delete records older than this many days")],
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="connect as this (the retention role of the PostgreSQL "
        "recipe); default: [storage] database_url")] = None,
    config: ConfigOpt = None,
) -> None:  # fmt: skip
    """Delete old records, leaving a retention anchor for verify."""
    if days < 1:
        fail("--days must be at least 1")
    before = time.time_ns() // 1000 - days * 86_400_000_000

    async def work(repo: Any) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return int(await repo.prune(before))
        except SQLAlchemyError as exc:
            fail(f"the database refused: {getattr(exc, 'orig', None) or exc}")

    out.print(f"deleted {_run(config, work, database_url)} record(s) older than {days} days")


@app.command()
def recipe(
    app_role: Annotated[str, typer.Option(help="the role llmux serves with")] = "llmux",
    retention_role: Annotated[str, typer.Option(help="the role that prunes")] = (
        "llmux_audit_retention"
    ),
    owner_role: Annotated[str, typer.Option(help="the tables' new owner")] = "llmux_audit_owner",
    days: Annotated[int, typer.Option(help="rows younger than this cannot be deleted")] = 90,
) -> None:
    """Print the PostgreSQL recipe that makes the audit table append-only."""
    from llmux.storage.audit import pg_recipe

    try:
        out.print(pg_recipe(app_role, retention_role, owner_role, days), markup=False, end="")
    except ValueError as exc:
        fail(str(exc))


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="audit")
