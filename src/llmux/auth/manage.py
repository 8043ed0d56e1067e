"""Managing users, API keys, OAuth2 clients and tokens (for the admin API, a user's own
keys and the CLI), and issuing OAuth2 tokens (RFC 6749 section 4.4). Revocations drop
what the credential cache holds at once (``cache.py``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from llmux.auth import scopes as sc
from llmux.auth import tokens
from llmux.auth.cache import CredentialCache, Throttle
from llmux.auth.secrets import (
    MIN_HMAC_SECRET,
    Keyring,
    hash_password,
    new_api_key,
    new_id,
    new_secret,
)
from llmux.config import AuthSettings
from llmux.core.context import Principal
from llmux.errors import Forbidden, InvalidRequest, NotFound
from llmux.storage.principals import ClientRow, KeyRow, SqlPrincipals, User

MIN_PASSWORD = 8


class Management:
    """The management half of :class:`~llmux.auth.control.AccessControl`."""

    def __init__(self, repo: SqlPrincipals, keyring: Keyring, settings: AuthSettings) -> None:
        self.repo = repo
        self.keyring = keyring
        self.settings = settings
        self.cache = CredentialCache()
        self.throttle = Throttle(settings.max_failures, settings.failure_window_s)

    async def add_user(self, name: str, password: str, role: str = "user") -> User:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidRequest("a user name is 1 to 100 characters", param="name")
        if role not in ("admin", "user"):
            raise InvalidRequest("role is 'admin' or 'user'", param="role")
        if len(password) < MIN_PASSWORD:
            raise InvalidRequest(f"a password has at least {MIN_PASSWORD} characters",
                                 param="password")  # fmt: skip
        hashed = await asyncio.to_thread(hash_password, password)
        return await self.repo.add_user(name, hashed, role)

    async def set_password(self, user_id: str, password: str) -> User:
        if len(password) < MIN_PASSWORD:
            raise InvalidRequest(f"a password has at least {MIN_PASSWORD} characters",
                                 param="password")  # fmt: skip
        hashed = await asyncio.to_thread(hash_password, password)
        return await self.repo.update_user(user_id, password_hash=hashed)

    async def update_user(self, user_id: str, *, role: str | None = None,
                          disabled: bool | None = None, team: str | None = None) -> User:  # fmt: skip
        values: dict[str, Any] = {}
        if team is not None:  # budgets per team (docs/quotas.md); not a credential change
            await self.repo.update_user(user_id, team=team.strip() or None)
        if role is not None:
            if role not in ("admin", "user"):
                raise InvalidRequest("role is 'admin' or 'user'", param="role")
            values["role"] = role
        if disabled is not None:
            values["disabled"] = disabled
        user = (
            await self.repo.update_user(user_id, **values) if values else await self.user(user_id)
        )
        if values:  # a disabled user, or a role taken away, ends their UI sessions
            await self.repo.end_sessions_of(user_id)
        self.cache.forget_user(user_id)
        return user

    async def delete_user(self, user_id: str) -> None:
        await self.repo.delete_user(user_id)
        self.cache.forget_user(user_id)

    async def user(self, user_id: str) -> User:
        found = await self.repo.user(user_id) or await self.repo.user_named(user_id)
        if found is None:
            raise NotFound(f"no user {user_id!r}")
        return found

    async def create_key(
        self,
        owner: User,
        *,
        name: str = "",
        scopes: frozenset[str] | None = None,
        models: tuple[str, ...] = (),
        expires_in: float | None = None,
        within: Principal | None = None,
    ) -> tuple[KeyRow, str]:
        """A new key of ``owner``'s, and its text (shown once). Its scopes are at most
        the owner's role's, and, when ``within`` (the caller) is given, the caller's."""
        ceiling = sc.role_scopes(owner.role)
        if within is not None and not within.anonymous:
            ceiling &= within.scopes
        wanted = _granted(ceiling, scopes, "key")
        if within is not None and within.models:
            models = models or within.models
            if not set(models) <= set(within.models):
                raise Forbidden("a new key's models must be among the caller's own patterns")
        if expires_in is not None and expires_in <= 0:
            raise InvalidRequest("expires_in must be positive", param="expires_in")
        key_id, secret, text = new_api_key()
        now = time.time()
        row = KeyRow(
            key_id, owner.id, name.strip()[:100], self.keyring.digest(secret),
            tuple(s for s in sc.SCOPES if s in wanted), tuple(models), now,
            now + expires_in if expires_in else None, None, None,
        )  # fmt: skip
        await self.repo.add_key(row)
        return row, text

    async def revoke_key(self, key_id: str) -> None:
        if not await self.repo.revoke_key(key_id):
            raise NotFound(f"no active key {key_id!r}")
        self.cache.forget(key_id)

    async def rotate_key(self, key_id: str) -> tuple[KeyRow, str]:
        """A new key with the old one's owner, name, scopes, models and remaining life;
        the old one is revoked."""
        old = await self.repo.key(key_id)
        if old is None or old.revoked_at is not None:
            raise NotFound(f"no active key {key_id!r}")
        owner = await self.user(old.user_id)
        remaining = old.expires_at - time.time() if old.expires_at else None
        row, text = await self.create_key(
            owner, name=old.name, scopes=frozenset(old.scopes), models=old.models,
            expires_in=max(remaining, 1.0) if remaining is not None else None,
        )  # fmt: skip
        await self.revoke_key(key_id)
        return row, text

    async def create_client(
        self,
        owner: User,
        *,
        name: str = "",
        scopes: frozenset[str] | None = None,
        models: tuple[str, ...] = (),
        secret: str | None = None,
    ) -> tuple[ClientRow, str]:
        """A new OAuth2 client and its secret (shown once; a given ``secret`` must be at
        least 32 bytes, as it signs HS256 tokens)."""
        wanted = _granted(sc.role_scopes(owner.role), scopes, "client")
        secret = secret or new_secret()
        _check_client_secret(secret)
        client_id = f"llmux-{new_id()}"
        row = ClientRow(
            client_id, owner.id, name.strip()[:100], self.keyring.digest(secret),
            self.keyring.seal(secret, client_id), tuple(s for s in sc.SCOPES if s in wanted),
            tuple(models), time.time(), None,
        )  # fmt: skip
        await self.repo.add_client(row)
        return row, secret

    async def rotate_client(self, client_id: str, secret: str | None = None) -> str:
        secret = secret or new_secret()
        _check_client_secret(secret)
        sealed = self.keyring.seal(secret, client_id)
        if not await self.repo.set_client_secret(client_id, self.keyring.digest(secret), sealed):
            raise NotFound(f"no active client {client_id!r}")
        self.cache.forget(client_id)
        return secret

    async def revoke_client(self, client_id: str) -> None:
        if not await self.repo.revoke_client(client_id):
            raise NotFound(f"no active client {client_id!r}")
        self.cache.forget_principal(client_id)

    async def revoke_token(self, token_or_jti: str) -> None:
        """Revoke a token (given whole, or by its ``jti``) until it would have expired."""
        jti, expires_at = token_or_jti, time.time() + tokens.MAX_CLIENT_TOKEN_S
        if token_or_jti.count(".") == 2:
            _, claims = tokens.unverified(token_or_jti)
            jti = str(claims.get("jti") or "")
            if not jti:
                raise InvalidRequest("the token has no 'jti' claim to revoke it by")
            expires_at = float(claims.get("exp") or expires_at)
        await self.repo.revoke_token(jti, expires_at)
        self.cache.forget(jti)

    # -- OAuth2 ---------------------------------------------------------------------------

    async def client_credentials(
        self, client_id: str, secret: str, scope: str | None, address: str | None
    ) -> dict[str, Any]:
        """RFC 6749 section 4.4: a token for a client that proves its secret."""
        now = time.monotonic()
        self.throttle.check(address, now)
        client = await self.repo.client(client_id)
        stored = client.secret_hash if client is not None else "0" * 64
        if not self.keyring.matches(secret, stored) or client is None or client.revoked_at:
            self.throttle.failed(address, now)
            raise OAuthError("invalid_client", "client authentication failed", 401)
        owner = await self.repo.user(client.owner_id)
        if owner is None or owner.disabled:
            raise OAuthError("invalid_client", "the client's owner is disabled", 401)
        allowed = frozenset(client.scopes) & sc.role_scopes(owner.role)
        if scope is None or not scope.strip():
            granted = allowed
        else:
            asked = frozenset(scope.split())
            unknown = sorted(asked - set(sc.SCOPES))
            if unknown:
                raise OAuthError("invalid_scope", f"unknown scope(s): {', '.join(unknown)}")
            granted = asked & allowed
            if not granted:
                raise OAuthError("invalid_scope", "none of the requested scopes is allowed "
                                 "for this client")  # fmt: skip
        text = sc.scope_text(granted)
        token, _ = tokens.issue(
            self.keyring.signing, self.settings.issuer, client.id, text, self.settings.token_ttl_s
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.settings.token_ttl_s,
            "scope": text,
        }


def _granted(ceiling: frozenset[str], asked: frozenset[str] | None, what: str) -> frozenset[str]:
    """The scopes a new key or client gets: those asked for, which must be within the
    ceiling, or by default the ceiling without ``admin``."""
    wanted = (ceiling - {sc.ADMIN}) if asked is None else asked
    beyond = sorted(wanted - ceiling)
    if beyond:
        raise Forbidden(f"a {what} of this user can't have the scope(s) {', '.join(beyond)}")
    return wanted


def _check_client_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_HMAC_SECRET:
        raise InvalidRequest(
            f"a client secret must be at least {MIN_HMAC_SECRET} bytes: clients sign HS256 "
            "tokens with it, and RFC 7518 section 3.2 requires a key at least as long as "
            "the hash",
            param="secret",
        )


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``error``, ``error_description``, its status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
