"""The ``llmux`` command. ``serve`` runs the server; the other commands talk to it over
HTTP at ``LLMUX_HOST`` (default 127.0.0.1:11434), as Ollama's CLI does with OLLAMA_HOST."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from llmux import __version__
from llmux.config import Settings, load_settings, parse_host

app = typer.Typer(
    help="llmux: one server for the Ollama, OpenAI and DeepSeek APIs.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)
out = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (or LLMUX_CONFIG)")
]


def _settings(config: Path | None = None, **overrides: Any) -> Settings:
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


def fail(message: str) -> NoReturn:
    err.print(f"[red]Error:[/red] {message}")
    raise typer.Exit(1)


def _get(settings: Settings, path: str) -> Any:
    try:
        r = httpx.get(settings.base_url + path, timeout=30)
    except httpx.HTTPError:
        fail(f"could not reach llmux at {settings.base_url}; start it with `llmux serve`")
    if r.status_code >= 400:
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text
        fail(str(message))
    return r.json()


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to bind, host or host:port (or LLMUX_HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port to bind")] = None,
    config: ConfigOpt = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
) -> None:
    """Start the server (default 127.0.0.1:11434) with the bundled model ready."""
    import uvicorn

    from llmux.server.app import create_app

    base = _settings(config, log_level=log_level)
    bind_host, bind_port = base.bind
    if host:
        try:
            given = parse_host(host)
        except ValueError as exc:
            fail(str(exc))
        has_port = host.count(":") == 1 or "]:" in host
        bind_host, bind_port = given[0], given[1] if has_port else bind_port
    bind_port = port or bind_port
    settings = base.model_copy(
        update={
            "host": f"{bind_host}:{bind_port}"
            if ":" not in bind_host
            else f"[{bind_host}]:{bind_port}"
        }
    )
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    err.print(f"llmux {__version__} listening on http://{bind_host}:{bind_port}")
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


@app.command("list")
def list_models(config: ConfigOpt = None) -> None:
    """List installed models."""
    data = _get(_settings(config), "/api/tags")
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None)
    for m in data.get("models", []):
        table.add_row(
            m["name"],
            m["digest"][:12],
            f"{m['size'] / 1e6:.0f} MB",
            m["modified_at"][:19].replace("T", " "),
        )
    out.print(table)


@app.command()
def ps(config: ConfigOpt = None) -> None:
    """List loaded models."""
    data = _get(_settings(config), "/api/ps")
    table = Table("NAME", "ID", "SIZE", "CONTEXT", "UNTIL", box=None)
    for m in data.get("models", []):
        table.add_row(
            m["name"],
            m["digest"][:12],
            f"{m['size'] / 1e6:.0f} MB",
            str(m.get("context_length", "")),
            m["expires_at"][:19].replace("T", " "),
        )
    out.print(table)


@app.command()
def version(config: ConfigOpt = None) -> None:
    """Print the client version, and the server's if one is running."""
    out.print(f"client version is {__version__}")
    settings = _settings(config)
    try:
        r = httpx.get(settings.base_url + "/api/version", timeout=5)
        out.print(f"server version is {r.json()['version']} at {settings.base_url}")
    except (httpx.HTTPError, ValueError, KeyError):
        out.print(f"no server running at {settings.base_url}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
