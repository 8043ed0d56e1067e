"""``llmux batch submit|list|status|cancel|download``: the Batch API (docs/batch.md)
through the SDK's ``client.files`` and ``client.batches``.

``submit`` prints the new batch's id alone on stdout (``id=$(llmux batch submit f.jsonl)``);
what it says besides goes to stderr. With ``--wait`` it shows the progress until the
batch ends and exits 1 unless it completed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from llmux.cli.common import ConfigOpt, err, fail, out, settings

if TYPE_CHECKING:
    from llmux.client import Batch, Client

app = typer.Typer(help="Batches of requests run at low priority (see docs/batch.md).",
                  no_args_is_help=True)  # fmt: skip

HostOpt = Annotated[
    str | None, typer.Option("--host", help="the server, host:port or URL (or LLMUX_HOST)")
]
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="API key when access control is on (or LLMUX_API_KEY)")
]
IdArg = Annotated[str, typer.Argument(help="batch id (`llmux batch list`)")]
DEFAULT_ENDPOINT = "/v1/chat/completions"
FIRST_LINE_BYTES = 1 << 20  # how much of the file is read to guess the endpoint
MAX_ERRORS_SHOWN = 20


def _client(config: Path | None, host: str | None, key: str | None) -> Client:
    from llmux.client import Client

    try:
        return Client(host or settings(config).base_url, api_key=key)
    except ValueError as exc:
        fail(str(exc))


@contextmanager
def _sdk_errors() -> Iterator[None]:
    """SDK and file errors as one line on stderr and exit status 1; a 404 says where
    the ids are."""
    from llmux.client import ClientError, ResponseError

    try:
        yield
    except ResponseError as exc:
        hint = "; `llmux batch list` shows your batches" if exc.status_code == 404 else ""
        fail(f"{exc}{hint}")
    except ClientError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or 'file'}: {exc.strerror or exc}")


def guess_endpoint(path: Path) -> str:
    """The ``url`` of the file's first request line, else ``/v1/chat/completions``."""
    try:
        with path.open("rb") as f:
            while not (first := f.readline(FIRST_LINE_BYTES)).strip():
                if not first:
                    return DEFAULT_ENDPOINT
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    try:
        url = json.loads(first).get("url")
    except (ValueError, AttributeError):
        return DEFAULT_ENDPOINT  # the server names the bad line on upload
    return url if isinstance(url, str) and url.startswith("/") else DEFAULT_ENDPOINT


def parse_metadata(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"metadata {item!r} is not KEY=VALUE, e.g. --metadata project=tickets")
        found[key.strip()] = value
    return found


def writable(output: Path) -> None:
    """Fail now, not after the batch ran, when ``output`` cannot be written."""
    if output.is_dir():
        fail(f"{output} is a folder; give a file name, e.g. {output / 'results.jsonl'}")
    if not output.parent.is_dir():
        fail(f"cannot write {output}: the folder {output.parent} does not exist")


def errors_path(output: Path) -> Path:
    """Where ``--output results.jsonl`` puts the failed lines: ``results.errors.jsonl``."""
    stem = output.name.removesuffix(".jsonl")
    return output.with_name(f"{stem}.errors.jsonl")


def when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def counts(batch: Batch) -> str:
    c = batch.request_counts
    return f"{c.completed + c.failed}/{c.total}"


# -- the progress of --wait ----------------------------------------------------------


@dataclass
class Pace:
    """Lines per second and the time left, from what this watch has seen."""

    clock: Callable[[], float] = time.monotonic
    start: tuple[float, int] | None = None

    def rate(self, done: int) -> float | None:
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
            return None
        t0, d0 = self.start
        return (done - d0) / (now - t0) if now > t0 and done > d0 else None

    @staticmethod
    def text(rate: float | None, left: int) -> tuple[str, str]:
        if not rate:
            return "- lines/s", "ETA -"
        eta = int(left / rate)
        speed = f"{rate:.1f} lines/s" if rate >= 1 else f"{rate * 60:.1f} lines/min"
        return speed, f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"


@dataclass
class Watch:
    """What ``--wait`` shows at each poll: a progress bar on a terminal; elsewhere a line
    when the status changes and at each further tenth done (so a log stays short)."""

    console: Console
    pace: Pace = field(default_factory=Pace)
    progress: Progress | None = None
    task: TaskID | None = None
    said: tuple[str, int] = ("", -1)

    def __enter__(self) -> Watch:
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description:<11}"), BarColumn(),
                TextColumn("{task.fields[counts]} done"), TextColumn("{task.fields[failed]} failed"),
                TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[eta]}"),
                console=self.console,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task("validating", total=None, counts="0/0",
                                               failed=0, rate="", eta="")  # fmt: skip
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, batch: Batch) -> None:
        c = batch.request_counts
        done = c.completed + c.failed
        measured = self.pace.rate(done) if batch.status != "validating" else None
        rate, eta = Pace.text(measured, max(c.total - done, 0))
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=batch.status, completed=done,
                                 total=c.total or None, counts=counts(batch), failed=c.failed,
                                 rate=rate, eta=eta)  # fmt: skip
            return
        tenth = done * 10 // c.total if c.total else 0
        if (batch.status, tenth) != self.said:
            self.said = (batch.status, tenth)
            self.console.print(f"{batch.id} {batch.status}: {counts(batch)} done, "
                               f"{c.failed} failed, {rate}, {eta}", markup=False)  # fmt: skip


# -- commands --------------------------------------------------------------------------


def _summary(batch: Batch, console: Console) -> None:
    """A batch as a few readable lines, with the first of its validation errors."""
    c = batch.request_counts
    rows = [
        ("endpoint", batch.endpoint),
        ("input file", batch.input_file_id),
        ("requests", f"{c.total} total, {c.completed} completed, {c.failed} failed"),
        ("created", when(batch.created_at)),
    ]
    if batch.usage and batch.usage.total_tokens:
        used = batch.usage
        rows.insert(3, ("tokens", f"{used.input_tokens:,} in, {used.output_tokens:,} out"))
    for name, ts in (("in progress", batch.in_progress_at), ("finalizing", batch.finalizing_at),
                     ("completed", batch.completed_at), ("failed", batch.failed_at),
                     ("cancelling", batch.cancelling_at), ("cancelled", batch.cancelled_at),
                     ("expired", batch.expired_at)):  # fmt: skip
        if ts:
            rows.append((name, when(ts)))
    if not batch.done and batch.expires_at:
        rows.append(("expires", when(batch.expires_at)))
    rows += [
        ("output file", batch.output_file_id or "-"),
        ("error file", batch.error_file_id or "-"),
    ]
    if batch.metadata:
        rows.append(("metadata", " ".join(f"{k}={v}" for k, v in batch.metadata.items())))
    console.print(f"[bold]{escape(batch.id)}[/bold]  {escape(batch.status)}")
    for name, value in rows:
        console.print(f"  {name:<12} {value}", markup=False)
    problems = batch.errors.data if batch.errors else []
    if problems:
        console.print("  errors:", markup=False)
    for e in problems[:MAX_ERRORS_SHOWN]:
        where = f"line {e.line}: " if e.line else ""
        code = f"{e.code}: " if e.code else ""
        console.print(f"    {where}{code}{e.message or ''}", markup=False)
    if len(problems) > MAX_ERRORS_SHOWN:
        console.print(f"    ... and {len(problems) - MAX_ERRORS_SHOWN} more", markup=False)


def _fetch(c: Client, batch: Batch, output: Path, errors: bool) -> int:
    """Download the batch's output (or errors) file to ``output``; the bytes written."""
    file_id = batch.error_file_id if errors else batch.output_file_id
    if file_id is None:
        if not batch.done:
            fail(f"batch {batch.id} is {batch.status}; its files are written when it ends "
                 f"(`llmux batch status {batch.id}`)")  # fmt: skip
        what = "errors file: no request failed" if errors else "output file: no request succeeded"
        fail(f"batch {batch.id} ({batch.status}) has no {what}")
    return c.files.download(file_id, output)


def _finish(c: Client, batch: Batch, output: Path | None) -> None:
    """After --wait: the summary, the files, and the exit status."""
    _summary(batch, err)
    failed = batch.request_counts.failed
    if output is not None and batch.output_file_id:
        size = c.files.download(batch.output_file_id, output)
        err.print(f"wrote {output} ({size:,} bytes)", markup=False)
    if output is not None and batch.error_file_id:
        size = c.files.download(batch.error_file_id, errors_path(output))
        err.print(f"wrote {errors_path(output)} ({size:,} bytes): {failed} failed", markup=False)
    elif failed and batch.error_file_id:
        err.print(f"{failed} request(s) failed: `llmux batch download {batch.id} --errors`",
                  markup=False)  # fmt: skip
    if batch.status != "completed":
        err.print(f"[red]batch {escape(batch.id)} {escape(batch.status)}[/red]")
        raise typer.Exit(1)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of requests", show_default=False)],
    endpoint: Annotated[str | None, typer.Option(
        help="/v1/chat/completions, /v1/completions, /v1/embeddings or /v1/moderations; "
        "default: the first line's url")] = None,
    window: Annotated[str, typer.Option(help="completion window")] = "24h",
    metadata: Annotated[list[str] | None, typer.Option(
        "--metadata", "-m", help="KEY=VALUE kept with the batch (repeatable)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="show the progress until it ends")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="with --wait: write "
        "the output here and failed lines beside it (NAME.errors.jsonl); implies --wait")] = None,
    poll: Annotated[float, typer.Option(min=0.1, help="seconds between polls")] = 2.0,
    host: HostOpt = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:  # fmt: skip
    """Upload a file of requests and start a batch; print its id."""
    if not file.is_file():
        fail(f"{file} is not a file; give the JSON Lines file of requests")
    if output is not None:
        writable(output)
    chosen = endpoint or guess_endpoint(file)
    meta = parse_metadata(metadata)
    with _sdk_errors(), _client(config, host, key) as c:
        uploaded = c.files.create(file, purpose="batch")
        err.print(f"uploaded {file.name} as {uploaded.id} ({uploaded.bytes:,} bytes)", markup=False)
        batch = c.batches.create(uploaded.id, endpoint=chosen, completion_window=window,
                                 metadata=meta)  # fmt: skip
        out.print(batch.id, markup=False)
        if not (wait or output):
            return
        try:
            with Watch(err) as watch:
                batch = c.batches.wait(batch.id, poll=poll, on_progress=watch)
        except KeyboardInterrupt:
            err.print(f"stopped waiting; the batch runs on: `llmux batch status {batch.id}`",
                      markup=False)  # fmt: skip
            raise typer.Exit(130) from None
        _finish(c, batch, output)


@app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option(min=1, max=100, help="how many, newest first")] = 20,
    after: Annotated[str | None, typer.Option(help="start after this batch id")] = None,
    host: HostOpt = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List your batches, newest first."""
    with _sdk_errors(), _client(config, host, key) as c:
        page = c.batches.list(after=after, limit=limit)
    table = Table("ID", "STATUS", "ENDPOINT", "DONE", "FAILED", "CREATED", box=None)
    for b in page.data:
        table.add_row(b.id, b.status, b.endpoint, counts(b), str(b.request_counts.failed),
                      when(b.created_at))  # fmt: skip
    out.print(table)
    if not page.data:
        out.print("no batches yet: `llmux batch submit FILE`", markup=False)
    if page.has_more and page.last_id:
        out.print(f"more: llmux batch list --after {page.last_id}", markup=False)


@app.command()
def status(batch_id: IdArg, host: HostOpt = None, key: KeyOpt = None,
           config: ConfigOpt = None) -> None:  # fmt: skip
    """Show a batch: status, counts, times, files and validation errors."""
    with _sdk_errors(), _client(config, host, key) as c:
        batch = c.batches.get(batch_id)
    _summary(batch, out)


@app.command()
def cancel(batch_id: IdArg, host: HostOpt = None, key: KeyOpt = None,
           config: ConfigOpt = None) -> None:  # fmt: skip
    """Stop a batch: lines not yet run are not run; what ran is kept."""
    with _sdk_errors(), _client(config, host, key) as c:
        batch = c.batches.cancel(batch_id)
    out.print(f"{batch.id} {batch.status}", markup=False)


@app.command()
def download(
    batch_id: IdArg,
    output: Annotated[Path | None, typer.Option("--output", "-o",
        help="where to write; default ID.jsonl (ID.errors.jsonl with --errors)")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="the failed lines instead")] = False,
    host: HostOpt = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:  # fmt: skip
    """Download a batch's output file (or, with --errors, its error file)."""
    dest = output or Path(f"{batch_id}.errors.jsonl" if errors else f"{batch_id}.jsonl")
    writable(dest)
    with _sdk_errors(), _client(config, host, key) as c:
        size = _fetch(c, c.batches.get(batch_id), dest, errors)
    out.print(f"wrote {dest} ({size:,} bytes)", markup=False)


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="batch")
