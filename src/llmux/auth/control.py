"""AccessControl: credentials in, a Principal out.

Verified credentials are cached in process for ``[auth] cache_s`` (1 s by default):
a check then costs a dictionary lookup, and a key, client or token revoked on any
replica is refused by every replica within that time (the cache on the revoking replica
is dropped at once; ``cache.py``). While a credential is in use its entry is renewed in
the background before it lapses, one database check at a time. Failed attempts are
counted per client address (``cache.Throttle``). No credential is ever written to a log
or an error message. Managing users, keys and clients is ``manage.py``'s.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import secrets as pysecrets
import time
from typing import Any

from llmux.auth import scopes as sc
from llmux.auth import tokens
from llmux.auth.cache import Cached
from llmux.auth.manage import Management
from llmux.auth.secrets import (
    MIN_HMAC_SECRET,
    Keyring,
    hash_password,
    new_secret,
    parse_api_key,
    password_matches,
)
from llmux.config import AuthSettings
from llmux.core.context import Principal
from llmux.errors import (
    InvalidRequest,
    LlmuxError,
    ServerBusy,
    Unauthorized,
)
from llmux.storage.principals import SessionRow, SqlPrincipals, User

log = logging.getLogger(__name__)
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per key


def _fingerprint(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class AccessControl(Management):
    """Credentials in, a :class:`Principal` out (API keys, tokens, UI sessions); the
    management of users, keys and clients comes from :class:`Management`."""

    def __init__(
        self,
        repo: SqlPrincipals,
        keyring: Keyring,
        settings: AuthSettings,
        issuers: list[tokens.ExternalIssuer] | None = None,
    ) -> None:
        super().__init__(repo, keyring, settings)
        self.issuers = {i.issuer: i for i in issuers or []}
        self._pending: dict[str, asyncio.Future[Principal]] = {}
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.setup_token: str | None = None

    # -- start-up ---------------------------------------------------------------------

    async def bootstrap(self) -> str | None:
        """Make sure someone can administer the server: the admin named by
        ``[auth] admin_name`` with ``[auth] admin_password`` (usually from
        ``LLMUX_AUTH__ADMIN_PASSWORD``) when there is no admin yet, else a one-time
        setup token, returned (and printed by the caller) until an admin exists."""
        if await self.repo.count_admins():
            return None
        password = self.settings.admin_password
        if password:
            existing = await self.repo.user_named(self.settings.admin_name)
            if existing is None:
                try:
                    await self.add_user(self.settings.admin_name, password, "admin")
                except InvalidRequest:  # a replica starting at the same moment made it
                    if await self.repo.user_named(self.settings.admin_name) is None:
                        raise
                    return None
            else:
                await self.repo.update_user(existing.id, role="admin", disabled=False)
            log.info("auth: admin %r created from [auth] admin_password", self.settings.admin_name)
            return None
        self.setup_token = pysecrets.token_urlsafe(24)
        return self.setup_token

    async def setup(self, token: str, name: str, password: str, client: str | None) -> User:
        """The first admin, made with the setup token; the token then stops working."""
        now = time.monotonic()
        self.throttle.check(client, now)
        expected = self.setup_token
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            self.throttle.failed(client, now)
            raise Unauthorized("the setup token is not valid (it is printed at start-up "
                               "while no admin exists)", error="invalid_token")  # fmt: skip
        user = await self.add_user(name, password, "admin")
        self.setup_token = None
        return user

    # -- authentication ------------------------------------------------------------------

    async def authenticate(self, credential: str, client: str | None) -> Principal:
        """The principal a bearer credential (an API key or a JWT) stands for, or
        Unauthorized; 429 for an address with too many recent failures."""
        now = time.monotonic()
        self.throttle.check(client, now)
        fingerprint = _fingerprint(credential)
        hit = self.cache.entries.get(fingerprint)
        if hit is not None and hit.until > now and (hit.expires_at or 1e18) > time.time():
            if hit.until - now < self.settings.cache_s / 2:
                self._check(fingerprint, credential, now)  # refreshed ahead, in the background
            return hit.principal
        try:
            return await asyncio.shield(self._check(fingerprint, credential, now))
        except Unauthorized:
            self.throttle.failed(client, now)
            raise

    def _check(
        self, fingerprint: str, credential: str, started: float
    ) -> asyncio.Future[Principal]:
        """The one check of a credential in flight (requests that need it meanwhile wait
        for the same one): it asks the database and caches what it found until
        ``started + cache_s``, so a cached answer is never older than that."""
        pending = self._pending.get(fingerprint)
        if pending is None:
            pending = asyncio.ensure_future(self._check_and_cache(fingerprint, credential, started))
            self._pending[fingerprint] = pending
            pending.add_done_callback(lambda done: self._settled(fingerprint, done))
        return pending

    async def _check_and_cache(
        self, fingerprint: str, credential: str, started: float
    ) -> Principal:
        generation = self.cache.generation
        try:
            principal, expires_at, owner = await self._verify(credential)
        except Unauthorized:
            self.cache.entries.pop(fingerprint, None)
            raise
        except LlmuxError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database, unreachable or failing
            log.warning("auth: cannot check a credential: %s", exc)
            raise ServerBusy("cannot check credentials right now: the database is "
                             "unavailable", retry_after=1) from None  # fmt: skip
        if generation == self.cache.generation:  # nothing was revoked meanwhile
            until = started + self.settings.cache_s
            self.cache.put(fingerprint, Cached(principal, until, expires_at, owner))
        return principal

    def _settled(self, fingerprint: str, done: asyncio.Future[Any]) -> None:
        self._pending.pop(fingerprint, None)
        if not done.cancelled():
            done.exception()  # retrieved, even when no request waited for it

    async def _verify(self, credential: str) -> tuple[Principal, float | None, str]:
        parsed = parse_api_key(credential)
        if parsed is not None:
            return await self._verify_key(*parsed)
        if credential.count(".") == 2:
            return await self._verify_token(credential)
        raise Unauthorized(
            "the credential is neither an llmux API key (sk-llmux-...) nor a token",
            error="invalid_token",
        )

    async def _verify_key(self, key_id: str, secret: str) -> tuple[Principal, float | None, str]:
        row = await self.repo.key(key_id)
        # the hash is compared even for an unknown id, so timing does not tell ids apart
        stored = row.hash if row is not None else "0" * 64
        if not self.keyring.matches(secret, stored) or row is None:
            raise Unauthorized("the API key is not valid", error="invalid_token")
        if row.revoked_at is not None:
            raise Unauthorized("the API key has been revoked", error="invalid_token")
        if row.expires_at is not None and row.expires_at <= time.time():
            raise Unauthorized("the API key has expired", error="invalid_token")
        user = await self._active_user(row.user_id)
        self._touch(row.id)
        principal = Principal(
            kind="key",
            id=row.id,
            name=f"{user.name}/{row.name or row.id}",
            scopes=frozenset(row.scopes) & sc.role_scopes(user.role),
            models=row.models,
            user_id=user.id,
        )
        return principal, row.expires_at, row.id

    async def _active_user(self, user_id: str) -> User:
        user = await self.repo.user(user_id)
        if user is None or user.disabled:
            raise Unauthorized("the credential's user is disabled", error="invalid_token")
        return user

    async def _verify_token(self, token: str) -> tuple[Principal, float | None, str]:
        header, unverified = tokens.unverified(token)
        issuer = unverified["iss"]
        leeway = self.settings.leeway_s
        if issuer == self.settings.issuer:
            claims = tokens.verify(
                token, self.keyring.signing, tokens.OWN_ALGORITHMS,
                issuer=issuer, audience=self.settings.issuer, leeway=leeway,
                required=("exp", "iat", "jti", "client_id"),
            )  # fmt: skip
            principal = await self._client_principal(str(claims["client_id"]), claims)
        elif issuer in self.issuers:
            claims = await self._verify_external(token, header, self.issuers[issuer])
            principal = self._external_principal(claims, self.issuers[issuer])
        else:
            claims = await self._verify_client_signed(token, issuer)
            principal = await self._client_principal(issuer, claims)
        jti = claims.get("jti")
        if isinstance(jti, str) and await self.repo.token_revoked(jti):
            raise Unauthorized("the token has been revoked", error="invalid_token")
        return principal, float(claims["exp"]), str(jti or principal.id)

    async def _verify_client_signed(self, token: str, client_id: str) -> dict[str, Any]:
        client = await self.repo.client(client_id)
        if client is None or client.revoked_at is not None:
            raise Unauthorized("the token's issuer is not a known client", error="invalid_token")
        secret = self.keyring.unseal(client.sealed_secret, client.id)
        if secret is None:
            raise Unauthorized("the client's secret was sealed under another [auth] secret; "
                               "rotate the client's secret", error="invalid_token")  # fmt: skip
        if len(secret.encode()) < MIN_HMAC_SECRET:
            raise Unauthorized(
                f"the client's secret is shorter than {MIN_HMAC_SECRET} bytes, too short to "
                "sign HS256 tokens (RFC 7518 section 3.2); rotate it", error="invalid_token",
            )  # fmt: skip
        claims = tokens.verify(
            token, secret.encode(), tokens.OWN_ALGORITHMS,
            issuer=client_id, audience=None, leeway=self.settings.leeway_s,
        )  # fmt: skip
        if float(claims["exp"]) - float(claims["iat"]) > tokens.MAX_CLIENT_TOKEN_S:
            raise Unauthorized("a client-signed token may live at most 24 hours (exp - iat)",
                               error="invalid_token")  # fmt: skip
        return claims

    async def _verify_external(
        self, token: str, header: dict[str, Any], issuer: tokens.ExternalIssuer
    ) -> dict[str, Any]:
        kid = str(header.get("kid") or "")
        key = issuer.keys.get(kid) or (issuer.keys.get("") if len(issuer.keys) == 1 else None)
        if key is None and issuer.jwks_url and time.time() - issuer.fetched_at > 60:
            await self._fetch_jwks(issuer)
            key = issuer.keys.get(kid)
        if key is None:
            raise Unauthorized("no key of the token's issuer has the token's 'kid'",
                               error="invalid_token")  # fmt: skip
        algorithms = [a for a in tokens.EXTERNAL_ALGORITHMS if a == (key.algorithm_name or a)]
        return tokens.verify(
            token, key.key, algorithms,
            issuer=issuer.issuer, audience=issuer.audience, leeway=self.settings.leeway_s,
        )  # fmt: skip

    async def _fetch_jwks(self, issuer: tokens.ExternalIssuer) -> None:
        import httpx

        issuer.fetched_at = time.time()
        assert issuer.jwks_url is not None
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                response = await http.get(issuer.jwks_url)
                response.raise_for_status()
                issuer.add_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("auth: could not fetch the JWKS of %s: %s", issuer.issuer, exc)

    def _external_principal(
        self, claims: dict[str, Any], issuer: tokens.ExternalIssuer
    ) -> Principal:
        named = tokens.scopes_of(claims)
        granted = frozenset(self.settings.external_scopes)
        return Principal(
            kind="token",
            id=str(claims.get("sub") or claims.get("client_id") or ""),
            name=f"{issuer.issuer}:{claims.get('sub', '')}",
            scopes=granted if named is None else granted & named,
        )

    async def _client_principal(self, client_id: str, claims: dict[str, Any]) -> Principal:
        client = await self.repo.client(client_id)
        if client is None or client.revoked_at is not None:
            raise Unauthorized("the token's client has been revoked", error="invalid_token")
        owner = await self._active_user(client.owner_id)
        allowed = frozenset(client.scopes) & sc.role_scopes(owner.role)
        named = tokens.scopes_of(claims)
        return Principal(
            kind="client",
            id=client.id,
            name=client.name or client.id,
            scopes=allowed if named is None else allowed & named,
            models=client.models,
            user_id=owner.id,
        )

    async def revoked(self, principal: Principal) -> str | None:
        """Why a principal that was valid when it made something (a batch) may no longer
        act: its key or client revoked or expired, its user disabled or gone. None while
        it may; external tokens are not checked again (their issuer decides)."""
        user_id = principal.user_id
        if principal.kind == "key" and principal.id is not None:
            key = await self.repo.key(principal.id)
            if key is None or key.revoked_at is not None:
                return "the API key that made it has been revoked"
            if key.expires_at is not None and key.expires_at <= time.time():
                return "the API key that made it has expired"
        elif principal.kind == "client" and principal.id is not None:
            client = await self.repo.client(principal.id)
            if client is None or client.revoked_at is not None:
                return "the OAuth2 client that made it has been revoked"
        elif principal.kind == "user":
            user_id = principal.id
        if principal.kind != "token" and user_id is not None:
            user = await self.repo.user(user_id)
            if user is None or user.disabled:
                return "the user who made it is disabled"
        return None

    # -- UI sessions ------------------------------------------------------------------

    async def open_session(self, user: User) -> tuple[str, str]:
        """A new session for ``user``: (the cookie's value, the CSRF token)."""
        token, csrf = new_secret(), new_secret()
        now = time.time()
        row = SessionRow(self.keyring.digest(token), user.id, csrf, now, now)
        await self.repo.add_session(row, older_than=now - self.settings.session_idle_s)
        return token, csrf

    async def session(self, token: str, client: str | None) -> tuple[Principal, str]:
        """The user behind a session cookie and the session's CSRF token; Unauthorized
        for a session that ended (logged out, idle past ``session_idle_s``, older than
        ``session_max_s``, or its user disabled)."""
        now = time.monotonic()
        self.throttle.check(client, now)
        fingerprint = "session:" + _fingerprint(token)
        hit = self.cache.entries.get(fingerprint)
        if hit is not None and hit.until > now:
            return hit.principal, hit.csrf
        session_id = self.keyring.digest(token)
        row = await self.repo.session(session_id)
        wall = time.time()
        if (
            row is None
            or row.last_seen_at < wall - self.settings.session_idle_s
            or row.created_at < wall - self.settings.session_max_s
        ):
            self.throttle.failed(client, now)
            raise Unauthorized("your session has ended; log in again", error="invalid_token")
        try:
            user = await self._active_user(row.user_id)
        except Unauthorized:
            self.throttle.failed(client, now)
            raise
        if wall - row.last_seen_at > TOUCH_EVERY_S:
            await self.repo.touch_session(session_id, wall)
        principal = Principal(
            kind="user", id=user.id, name=user.name, scopes=sc.role_scopes(user.role),
            user_id=user.id,
        )  # fmt: skip
        until = now + self.settings.cache_s
        self.cache.put(fingerprint, Cached(principal, until, None, session_id, row.csrf))
        return principal, row.csrf

    async def close_session(self, token: str) -> None:
        session_id = self.keyring.digest(token)
        await self.repo.end_session(session_id)
        self.cache.forget(session_id)

    async def login(self, name: str, password: str, client: str | None) -> User:
        """A user's name and password (the UI's login): the user, or Unauthorized."""
        now = time.monotonic()
        self.throttle.check(client, now)
        user = await self.repo.user_named(name)
        # an unknown name costs the same hashing as a known one: timing tells no names
        stored = user.password_hash if user is not None else ""
        ok = await asyncio.to_thread(_check_password, stored, password)
        if not ok or user is None or user.disabled:
            self.throttle.failed(client, now)
            # not a Basic challenge: browsers would answer it with their own login box
            raise Unauthorized("wrong user name or password")
        return user

    def _touch(self, key_id: str) -> None:
        now = time.time()
        if now - self._touched.get(key_id, 0.0) < TOUCH_EVERY_S:
            return
        self._touched[key_id] = now
        task = asyncio.get_running_loop().create_task(self._write_touch(key_id, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_touch(self, key_id: str, now: float) -> None:
        try:
            await self.repo.touch_key(key_id, now)
        except Exception as exc:  # noqa: BLE001 - a last-used time is not worth a failure
            log.warning("auth: could not record the last use of key %s: %s", key_id, exc)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            await task


@functools.cache
def _dummy_hash() -> str:
    return hash_password(pysecrets.token_urlsafe(16))


def _check_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches; with no stored hash a dummy one is checked, so an
    unknown name takes as long as a known one."""
    matches = password_matches(stored or _dummy_hash(), password)
    return matches and bool(stored)
