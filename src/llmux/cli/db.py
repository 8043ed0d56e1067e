"""``llmux db``: the SQL database itself. ``migrate`` brings its schema up to this
release and exits, for a deployment's migration step (a Kubernetes Job) before the
replicas start; ``llmux serve`` migrates as it starts too, so this is never required."""

from __future__ import annotations

import typer

from llmux.cli.common import ConfigOpt, out, settings, with_database
from llmux.storage.database import Database, database_url, redacted

app = typer.Typer(help="The SQL database: migrate its schema.", no_args_is_help=True)


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Migrate the database's schema to this release, then exit (safe while replicas
    start: on PostgreSQL one migrates under a lock and the others wait)."""
    conf = settings(config)

    async def version(db: Database) -> int:
        return db.version

    found = with_database(conf, version)
    url = redacted(database_url(conf.storage.database_url, conf.home_dir))
    out.print(f"{url}: schema version {found}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
