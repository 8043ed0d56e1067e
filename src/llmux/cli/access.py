"""``llmux users``, ``llmux keys`` and ``llmux clients``: access control from the
server's own machine. They work on the database directly (as configured for
``llmux serve``: ``[storage] database_url``, ``[auth] secret``), so the first admin can
be made before the server runs, and a locked-out operator can always get back in.
Secrets are printed once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from llmux.cli.common import ConfigOpt, err, out, settings, with_database

T = TypeVar("T")
users = typer.Typer(help="People who log in, and own keys and clients.", no_args_is_help=True)
keys = typer.Typer(help="API keys (sk-llmux-...).", no_args_is_help=True)
clients = typer.Typer(help="OAuth2 clients (client credentials).", no_args_is_help=True)

ScopesOpt = Annotated[
    str | None,
    typer.Option("--scopes", help="space- or comma-separated: inference, models:read, "
                 "models:write, conversations, batch, metrics, admin"),
]  # fmt: skip
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option("--models", help="allowed model pattern, e.g. 'deepseek-*' (repeatable)"),
]
UserOpt = Annotated[str, typer.Option("--user", "-u", help="the owner: a user's name or id")]


def _run(config: Path | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(access_control)`` against the configured database."""
    from llmux.services import access_control

    conf = settings(config)
    return with_database(conf, lambda db: work(access_control(conf, db)))


def _scopes(text: str | None) -> frozenset[str] | None:
    from llmux.auth.scopes import parse_scopes

    return None if text is None else parse_scopes(text)


def _when(value: float | None) -> str:
    import datetime as dt

    return "-" if value is None else dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M")


def _secret_line(label: str, value: str) -> None:
    err.print(f"{label} (shown once; keep it somewhere safe):")
    out.print(value, markup=False)


# -- users ---------------------------------------------------------------------------------


@users.command("add")
def users_add(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="role admin (default: user)")] = False,
    password: Annotated[
        str | None, typer.Option(help="the password (default: asked for, not echoed)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Add a user."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _run(config, lambda ac: ac.add_user(name, password, "admin" if admin else "user"))
    err.print(f"added {user.role} {user.name} ({user.id})")


@users.command("list")
def users_list(config: ConfigOpt = None) -> None:
    """List users."""
    found = _run(config, lambda ac: ac.repo.users())
    table = Table("ID", "NAME", "ROLE", "DISABLED", "CREATED")
    for u in found:
        table.add_row(u.id, u.name, u.role, "yes" if u.disabled else "", _when(u.created_at))
    out.print(table)


@users.command("disable")
def users_disable(
    user: str,
    enable: Annotated[bool, typer.Option("--enable", help="enable instead")] = False,
    config: ConfigOpt = None,
) -> None:
    """Disable a user (their keys and clients stop working), or enable them again."""

    async def work(ac: Any) -> Any:
        found = await ac.user(user)
        return await ac.update_user(found.id, disabled=not enable)

    done = _run(config, work)
    err.print(f"{done.name} is {'disabled' if done.disabled else 'enabled'}")


@users.command("team")
def users_team(
    user: str,
    team: Annotated[str, typer.Argument(help="the team's name; '' for none")],
    config: ConfigOpt = None,
) -> None:
    """Put a user in a team (a team can have a budget: `llmux budgets set team:NAME`)."""

    async def work(ac: Any) -> Any:
        return await ac.update_user((await ac.user(user)).id, team=team)

    done = _run(config, work)
    err.print(f"{done.name} is in team {done.team}" if done.team else f"{done.name} has no team")


@users.command("passwd")
def users_passwd(user: str, config: ConfigOpt = None) -> None:
    """Set a user's password."""
    password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def work(ac: Any) -> Any:
        return await ac.set_password((await ac.user(user)).id, password)

    err.print(f"password of {_run(config, work).name} set")


# -- keys ----------------------------------------------------------------------------------


@keys.command("create")
def keys_create(
    user: UserOpt,
    name: Annotated[str, typer.Option(help="a label, e.g. the machine it is for")] = "",
    scopes: ScopesOpt = None,
    models: ModelsOpt = None,
    expires: Annotated[
        str | None, typer.Option(help="life, e.g. 30d, 12h, 2w (default: no expiry)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API key for a user; the key is printed once."""
    from llmux.protocols.access import parse_expiry

    async def work(ac: Any) -> Any:
        owner = await ac.user(user)
        return await ac.create_key(
            owner, name=name, scopes=_scopes(scopes), models=tuple(models or ()),
            expires_in=parse_expiry(expires),
        )  # fmt: skip

    row, text = _run(config, work)
    err.print(f"key {row.id} for {user}: scopes {' '.join(row.scopes) or 'none'}"
              f"{'; models ' + ' '.join(row.models) if row.models else ''}")  # fmt: skip
    _secret_line("the key", text)


@keys.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="only this user's")] = None,
    config: ConfigOpt = None,
) -> None:
    """List API keys (never their secrets)."""

    async def work(ac: Any) -> Any:
        owner = (await ac.user(user)).id if user else None
        return await ac.repo.keys(owner)

    table = Table("ID", "USER", "NAME", "SCOPES", "MODELS", "EXPIRES", "LAST USED", "REVOKED")
    for k in _run(config, work):
        table.add_row(
            k.id, k.user_id[:8], k.name, " ".join(k.scopes), " ".join(k.models) or "*",
            _when(k.expires_at), _when(k.last_used_at), "yes" if k.revoked_at else "",
        )  # fmt: skip
    out.print(table)


@keys.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke an API key (every replica refuses it within [auth] cache_s)."""
    _run(config, lambda ac: ac.revoke_key(_key_id(key_id)))
    err.print(f"key {_key_id(key_id)} revoked")


@keys.command("rotate")
def keys_rotate(key_id: str, config: ConfigOpt = None) -> None:
    """Replace a key with a new one (same owner, scopes, models); the old one is revoked."""
    row, text = _run(config, lambda ac: ac.rotate_key(_key_id(key_id)))
    err.print(f"key {_key_id(key_id)} revoked; its replacement is {row.id}")
    _secret_line("the new key", text)


def _key_id(given: str) -> str:
    """A key's id, also from the whole key pasted in."""
    from llmux.auth.secrets import parse_api_key

    parsed = parse_api_key(given)
    return parsed[0] if parsed else given


# -- clients -------------------------------------------------------------------------------


@clients.command("create")
def clients_create(
    user: UserOpt,
    name: Annotated[str, typer.Option(help="a label")] = "",
    scopes: ScopesOpt = None,
    models: ModelsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create an OAuth2 client; its id and secret are printed (the secret once)."""

    async def work(ac: Any) -> Any:
        owner = await ac.user(user)
        return await ac.create_client(
            owner, name=name, scopes=_scopes(scopes), models=tuple(models or ())
        )

    row, secret = _run(config, work)
    err.print(f"client_id: {row.id} (scopes {' '.join(row.scopes)})")
    out.print(row.id, markup=False)
    _secret_line("client_secret", secret)


@clients.command("list")
def clients_list(config: ConfigOpt = None) -> None:
    """List OAuth2 clients."""
    table = Table("CLIENT ID", "OWNER", "NAME", "SCOPES", "MODELS", "CREATED", "REVOKED")
    for c in _run(config, lambda ac: ac.repo.clients()):
        table.add_row(
            c.id, c.owner_id[:8], c.name, " ".join(c.scopes), " ".join(c.models) or "*",
            _when(c.created_at), "yes" if c.revoked_at else "",
        )  # fmt: skip
    out.print(table)


@clients.command("revoke")
def clients_revoke(client_id: str, config: ConfigOpt = None) -> None:
    """Revoke a client: no new tokens, and its tokens stop working."""
    _run(config, lambda ac: ac.revoke_client(client_id))
    err.print(f"client {client_id} revoked")


@clients.command("rotate")
def clients_rotate(client_id: str, config: ConfigOpt = None) -> None:
    """Give a client a new secret; the old one stops working."""
    secret = _run(config, lambda ac: ac.rotate_client(client_id))
    _secret_line("the new client_secret", secret)


def register(app: typer.Typer) -> None:
    app.add_typer(users, name="users")
    app.add_typer(keys, name="keys")
    app.add_typer(clients, name="clients")
