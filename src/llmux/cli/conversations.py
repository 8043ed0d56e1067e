"""``llmux conversations``: list, show, export and remove server-kept conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmux.cli.common import ConfigOpt, client, fail, out, sdk_errors
from llmux.client.calls import ExportFormat

app = typer.Typer(help="Conversations kept by the server (see docs/conversations.md).")

IdArg = Annotated[str, typer.Argument(help="conversation id (`llmux conversations list`)")]


def _when(value: object) -> str:
    return str(value)[:16] if value else ""


@app.command("list")
def list_conversations(
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="full-text search over titles and messages")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many to show")] = 50,
    config: ConfigOpt = None,
) -> None:
    """List conversations, newest first."""
    with sdk_errors(), client(config) as c:
        found = c.conversations.list(search, limit=limit)
    table = Table(box=None)
    table.add_column("ID", no_wrap=True, min_width=32)
    table.add_column("TITLE", no_wrap=True, max_width=32, overflow="ellipsis")
    table.add_column("MODEL", no_wrap=True)
    table.add_column("MESSAGES", justify="right")
    table.add_column("UPDATED", no_wrap=True)
    if search:
        table.add_column("MATCH", no_wrap=True, max_width=60, overflow="ellipsis")
    for conv in found:
        row = [
            conv.id,
            conv.title,
            conv.model or "",
            str(conv.message_count),
            _when(conv.updated_at),
        ]
        snippet = " ".join((conv.snippet or "").split())
        table.add_row(*row, *([snippet] if search else []))
    out.print(table)


@app.command()
def show(conversation_id: IdArg, config: ConfigOpt = None) -> None:
    """Print a conversation's messages."""
    with sdk_errors(), client(config) as c:
        conv = c.conversations.get(conversation_id)
    out.print(f"[bold]{conv.title or 'untitled'}[/bold]  {conv.id}  model {conv.model or '-'}")
    if conv.system:
        out.print(f"system: {conv.system}", markup=False)
    for m in conv.messages:
        mark = " (stopped)" if m.partial else ""
        out.print(f"\n[bold]{m.role}{mark}:[/bold] ", end="")
        out.print(m.content, markup=False)


@app.command()
def export(
    conversation_id: IdArg,
    format: Annotated[str, typer.Option("--format", "-f", help="markdown or json")] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Export a conversation as Markdown or JSON."""
    if format not in ("markdown", "json"):
        fail(f"unknown format {format!r}; use --format markdown or --format json")
    kind: ExportFormat = "json" if format == "json" else "markdown"
    with sdk_errors(), client(config) as c:
        text = c.conversations.export(conversation_id, kind)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"could not write {output}: {exc.strerror or exc}")
    out.print(f"wrote {output}", markup=False)


@app.command("rm")
def remove(conversation_id: IdArg, config: ConfigOpt = None) -> None:
    """Delete a conversation."""
    with sdk_errors(), client(config) as c:
        c.conversations.delete(conversation_id)
    out.print(f"deleted {conversation_id}", markup=False)
