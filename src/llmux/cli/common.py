"""What every command shares: the consoles, settings, one-line errors, the SDK client."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from llmux.config import Settings, load_settings

if TYPE_CHECKING:
    from llmux.client import Client, ClientError
    from llmux.storage.database import Database

T = TypeVar("T")

err = Console(stderr=True, soft_wrap=True, highlight=False)
# in a pipe, tables keep whole ids and names rather than fitting 80 columns
out = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 200)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (or LLMUX_CONFIG)")
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option", "-p", help="model option KEY=VALUE, e.g. temperature=0.2 (repeatable)"
    ),
]
SystemOpt = Annotated[str | None, typer.Option("--system", help="system prompt")]


def fail(message: str) -> NoReturn:
    err.print(f"[red]Error:[/red] {escape(message)}")
    raise typer.Exit(1)


def settings(config: Path | None = None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        fail(f"invalid settings ({problems}); see docs/configuration.md")
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def with_database(
    conf: Settings, work: Callable[[Database], Awaitable[T]], url: str | None = None
) -> T:
    """Run ``work(database)`` on the configured database (or ``url``), opened (migrated)
    and closed around it; an llmux error or a bad value ends the command with its
    message."""
    from llmux.errors import LlmuxError
    from llmux.storage.database import Database, database_url

    async def go() -> T:
        db = Database(database_url(url or conf.storage.database_url, conf.home_dir))
        try:
            await db.open()
            return await work(db)
        finally:
            await db.aclose()

    try:
        return asyncio.run(go())
    except LlmuxError as exc:
        fail(exc.message)
    except ValueError as exc:
        fail(str(exc))


def client(config: Path | None = None, **options: Any) -> Client:
    """The SDK client for the server named by ``--config``/``LLMUX_HOST``."""
    from llmux.client import Client

    return Client(settings(config).base_url, **options)


def explain(exc: ClientError, model: str | None = None) -> str:
    """An SDK error as the one line a user reads; an unknown model names the fix."""
    from llmux.client import ResponseError

    if (
        model
        and isinstance(exc, ResponseError)
        and exc.status_code == 404
        and exc.error.startswith("model ")
    ):
        return f"model '{model}' not found, try `llmux pull {model}`"
    return str(exc)


@contextmanager
def sdk_errors(model: str | None = None) -> Iterator[None]:
    """Turn SDK errors inside the block into ``Error: ...`` on stderr and exit status 1."""
    from llmux.client import ClientError

    try:
        yield
    except ClientError as exc:
        fail(explain(exc, model))


def parse_options(items: list[str] | None) -> dict[str, Any] | None:
    """``["num_predict=8", "stop=[\\"x\\"]"]`` -> ``{"num_predict": 8, "stop": ["x"]}``;
    values are read as JSON where they parse, else kept as text."""
    if not items:
        return None
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"option {item!r} is not KEY=VALUE, e.g. --option temperature=0.2")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options
