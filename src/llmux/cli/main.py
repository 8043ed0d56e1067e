"""The ``llmux`` command. ``serve`` runs the server; the other commands talk to it over
HTTP through the SDK (``llmux.client``) at ``LLMUX_HOST`` (default 127.0.0.1:11434), as
Ollama's CLI does with OLLAMA_HOST. See docs/cli.md."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmux import __version__
from llmux.cli import access, audit, batch, conversations, db, models, quotas
from llmux.cli.common import (
    ConfigOpt,
    OptionOpt,
    SystemOpt,
    client,
    err,
    fail,
    out,
    parse_options,
    sdk_errors,
    settings,
)
from llmux.config import Settings, parse_host
from llmux.errors import LlmuxError

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(
    help="llmux: one server for the Ollama, OpenAI and DeepSeek APIs.", no_args_is_help=True
)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to bind, host or host:port (or LLMUX_HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port to bind")] = None,
    config: ConfigOpt = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="serve HTTPS with this PEM certificate")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="the certificate's PEM private key")
    ] = None,
) -> None:
    """Start the server (default 127.0.0.1:11434) with the bundled model ready."""
    from llmux.observability import logs
    from llmux.server.access import auth_enabled
    from llmux.server.app import create_app
    from llmux.storage.database import database_url, preflight

    overrides = {"log_level": log_level, "tls_cert": tls_cert, "tls_key": tls_key}
    server_overrides = {k: v for k, v in overrides.items() if v}
    configured = _bound(settings(config, server=server_overrides or None), host, port)
    s = configured.server
    try:  # one stderr handler, text or JSON; uvicorn's records go through it too
        logs.configure(s.log_level, s.log_format, bodies=s.log_bodies)
    except ValueError as exc:
        fail(str(exc))
    try:
        auth_enabled(configured)  # refuses an unsafe bind before anything else
        asyncio.run(preflight(database_url(configured.storage.database_url, configured.home_dir)))
        app = create_app(configured)
    except LlmuxError as exc:
        fail(exc.message)
    _run(app, configured)


def _bound(base: Settings, host: str | None, port: int | None) -> Settings:
    """The settings with ``--host``/``--port`` applied to where the server binds."""
    bind_host, bind_port = base.bind
    if host:
        try:
            given = parse_host(host)
        except ValueError as exc:
            fail(str(exc))
        has_port = host.count(":") == 1 or "]:" in host
        bind_host, bind_port = given[0], given[1] if has_port else bind_port
    bind_port = port or bind_port
    where = f"{bind_host}:{bind_port}" if ":" not in bind_host else f"[{bind_host}]:{bind_port}"
    return base.model_copy(update={"host": where})


def _run(app: FastAPI, configured: Settings) -> None:
    """Serve ``app`` with uvicorn: HTTPS (TLS 1.2 at least, 1.3 when the client can) with
    a certificate and key, else plain HTTP. SIGTERM drains (``server/drain.py``): new
    requests get 503, running ones get ``[server] drain_s`` to finish, then it exits 0."""
    import uvicorn

    from llmux.server.drain import DrainingServer

    tls = configured.server
    if bool(tls.tls_cert) != bool(tls.tls_key):
        fail("HTTPS needs both --tls-cert and --tls-key ([server] tls_cert and tls_key)")
    bind_host, bind_port = configured.bind
    server = DrainingServer(
        uvicorn.Config(
            app,
            host=bind_host,
            port=bind_port,
            log_level=tls.log_level.lower(),
            log_config=None,  # keep the handler logs.configure set up (format, filters)
            access_log=False,  # the request log (llmux.access, llmux.http) replaces it
            timeout_graceful_shutdown=5,  # after the drain: what came in at its very end
            ssl_certfile=str(tls.tls_cert) if tls.tls_cert else None,
            ssl_keyfile=str(tls.tls_key) if tls.tls_key else None,
        ),
        app.state.drain,
    )
    try:
        server.config.load()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        fail(f"cannot serve HTTPS with {tls.tls_cert} and {tls.tls_key}: {exc}")
    if server.config.ssl is not None:
        server.config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    scheme = "https" if server.config.ssl is not None else "http"
    listening = f"llmux {__version__} listening on {scheme}://{bind_host}:{bind_port}"
    if tls.log_format == "json":  # every stderr line is a JSON object then
        logging.getLogger("llmux").info(listening)
    else:
        err.print(listening)
    server.run()
    if not server.started:  # the port was taken, say (uvicorn logged why)
        raise typer.Exit(3)


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def _when(value: object) -> str:
    return str(value)[:19]


@app.command("list")
def list_models(config: ConfigOpt = None) -> None:
    """List installed models."""
    with sdk_errors(), client(config) as c:
        models = c.list().models
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None)
    for m in models:
        table.add_row(m.name, m.digest[:12], _mb(m.size), _when(m.modified_at))
    out.print(table)


@app.command()
def ps(config: ConfigOpt = None) -> None:
    """List loaded models."""
    with sdk_errors(), client(config) as c:
        models = c.ps().models
    table = Table("NAME", "ID", "SIZE", "CONTEXT", "UNTIL", box=None)
    for m in models:
        table.add_row(
            m.name, m.digest[:12], _mb(m.size), str(m.context_length or ""), _when(m.expires_at)
        )
    out.print(table)


@app.command()
def version(config: ConfigOpt = None) -> None:
    """Print the client version, and the server's if one is running."""
    from llmux.client import ClientError

    out.print(f"client version is {__version__}")
    with client(config, retry=False) as c:
        try:
            out.print(f"server version is {c.version()} at {c.base_url}")
        except ClientError:
            out.print(f"no server running at {c.base_url}")


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="model name, e.g. smollm2:135m")],
    prompt: Annotated[
        list[str] | None, typer.Argument(help="the prompt; omit it for an interactive session")
    ] = None,
    system: SystemOpt = None,
    option: OptionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Answer one prompt (also read from a pipe), or chat when no prompt is given."""
    from llmux.cli import interactive

    piped = "" if sys.stdin.isatty() else sys.stdin.read().strip()
    text = "\n\n".join(p for p in (" ".join(prompt or []).strip(), piped) if p)
    with client(config) as c:
        if text:
            interactive.one_shot(c, model, text, system=system, options=parse_options(option))
        elif sys.stdin.isatty():
            interactive.repl(c, model, system=system, options=parse_options(option), local=True)
        else:
            fail("no prompt: give one after the model name or pipe it in")


@app.command()
def chat(
    model: Annotated[
        str | None, typer.Argument(help="model name; default: the server's first model")
    ] = None,
    system: SystemOpt = None,
    option: OptionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Chat in a conversation the server keeps (/help inside lists the commands)."""
    from llmux.cli import interactive

    with client(config) as c:
        interactive.repl(c, model, system=system, options=parse_options(option), local=False)


models.register(app)
app.add_typer(conversations.app, name="conversations")
access.register(app)
quotas.register(app)
audit.register(app)
batch.register(app)
db.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
