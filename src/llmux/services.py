"""Everything the server serves with, built from the settings: one object the app's
lifespan owns (or a test hands in, with fakes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llmux.auth.control import AccessControl
from llmux.auth.secrets import Keyring, load_master
from llmux.auth.tokens import ExternalIssuer
from llmux.config import AuthSettings, Settings
from llmux.engine.engine import LocalEngine
from llmux.errors import InvalidRequest, LlmuxError
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.limits.allowance import Allowances
from llmux.limits.book import QuotaBook
from llmux.limits.budgets import BudgetCounters, MemoryBudgets, PriceTable, RedisBudgets
from llmux.limits.gcra import Limiter, MemoryLimiter, RedisLimiter
from llmux.limits.policy import Quotas
from llmux.limits.usage import UsageLog
from llmux.models.bundled import ensure_bundled
from llmux.models.manager import ModelManager
from llmux.models.store import ModelStore
from llmux.policies import Policy
from llmux.policies.access_log import AccessLog
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.storage.principals import SqlPrincipals
from llmux.storage.usage import SqlUsage
from llmux.upstream.router import UpstreamRouter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    gateway: Gateway
    history: ChatHistory
    database: Database | None = None
    access_control: AccessControl | None = None
    quotas: Quotas | None = None
    reconcile_s: float = 0.0

    @property
    def access(self) -> AccessControl:
        if self.access_control is None:
            raise InvalidRequest("this server has no access control (no database)")
        return self.access_control

    @property
    def limiter(self) -> Limiter | None:
        return self.quotas.limiter if self.quotas is not None else None

    @property
    def usage(self) -> UsageLog | None:
        return self.quotas.usage if self.quotas is not None else None

    async def start(self) -> None:
        if self.database is not None:
            await self.database.open()  # migrates the schema to the newest version
        if self.usage is not None:
            self.usage.start()
        if self.quotas is not None:
            self.quotas.start(self.reconcile_s)
        await self.gateway.start()

    async def aclose(self) -> None:
        try:
            await self.gateway.aclose()
            if self.access_control is not None:
                await self.access_control.aclose()
            if self.quotas is not None:
                await self.quotas.aclose()  # settles what is in flight
                if self.quotas.usage is not None:
                    await self.quotas.usage.aclose()  # writes what is queued
                if self.quotas.limiter is not None:
                    await self.quotas.limiter.aclose()
        finally:
            if self.database is not None:
                await self.database.aclose()


def policies(settings: Settings, quotas: Quotas | None = None) -> list[Policy]:
    """The configured policy chain, outermost first: the access log sees refusals too."""
    chain: list[Policy] = []
    if settings.server.access_log:
        chain.append(AccessLog())
    if quotas is not None:
        chain.append(quotas)
    return chain


def build_quotas(
    settings: Settings, db: Database | None, engine: LocalEngine | None = None
) -> Quotas:
    """Limits, budgets and usage accounting: counters in Redis when ``[redis] url`` is
    set, else in this process; definitions and the ledger in ``db``."""
    limiter = build_limiter(settings)
    repo = SqlUsage(db) if db is not None else None
    budgets: BudgetCounters | None = None
    if repo is not None:
        if isinstance(limiter, RedisLimiter | Allowances):
            budgets = RedisBudgets(limiter.scripts, settings.redis.prefix, settings.limits.lease_s)
        else:
            budgets = MemoryBudgets(settings.limits.lease_s)
    usage = UsageLog(repo, settings.usage, budgets) if repo and settings.usage.enabled else None
    return Quotas(
        settings.limits,
        limiter,
        book=QuotaBook(repo, settings.limits.refresh_s),
        prices=PriceTable(settings.prices),
        budgets=budgets if usage is not None else None,
        usage=usage,
        counter=engine.count_prompt if engine is not None else None,
        shared=isinstance(limiter, RedisLimiter | Allowances),
    )


def build_limiter(settings: Settings) -> Limiter:
    """Where limits are counted: Redis when configured (with each replica spending
    chunks of large limits by itself, ``allowance.py``), else this process."""
    if settings.redis.url:
        try:
            redis = RedisLimiter(settings.redis.url, prefix=settings.redis.prefix)
        except ImportError:
            raise LlmuxError(
                "[redis] url is set but the redis client is not installed; install it with "
                "`pip install 'llmux[redis]'`"
            ) from None
        s = settings.limits
        if s.local_share <= 0:
            return redis
        return Allowances(redis, s.local_share, s.local_share_s, s.lease_s)
    return MemoryLimiter()


def build_services(settings: Settings) -> Services:
    """The database, the model store, the engine and the gateway, each from its own
    section; :meth:`Services.start` opens them."""
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    db = Database(database_url(settings.storage.database_url, settings.home_dir))
    store = ModelStore(settings.models_dir)
    ensure_bundled(store, settings.store.bundled_model)
    engine = LocalEngine(store, settings.engine)
    quotas = build_quotas(settings, db, engine)
    gateway = Gateway(
        engine,
        manager=ModelManager(store, settings.store),
        upstreams=UpstreamRouter(settings.upstreams),
        aliases=settings.gateway.aliases,
        policies=policies(settings, quotas),
    )
    log.info("serving models from %s", store.root)
    history = ChatHistory(
        SqlConversations(db), gateway, admins_see_all=settings.auth.admins_see_all
    )
    access = access_control(settings, db)
    return Services(
        gateway=gateway, history=history, database=db, access_control=access, quotas=quotas,
        reconcile_s=settings.usage.reconcile_s,
    )  # fmt: skip


def access_control(settings: Settings, db: Database) -> AccessControl:
    """Access control over ``db`` with the server secret (also for the CLI)."""
    keyring = Keyring(load_master(settings.auth.secret, settings.home_dir))
    return AccessControl(SqlPrincipals(db), keyring, settings.auth, issuers(settings.auth))


def issuers(auth: AuthSettings) -> list[ExternalIssuer]:
    """The external identity providers, with the keys read from their files (a JWKS
    URL is fetched when its first token arrives)."""
    out = []
    for item in auth.issuers:
        issuer = ExternalIssuer(item.issuer, item.audience, item.jwks_url)
        try:
            if item.jwks_file is not None:
                issuer.add_jwks(item.jwks_file.expanduser().read_text())
            if item.public_key_file is not None:
                issuer.add_pem(item.public_key_file.expanduser().read_text(), item.algorithm)
        except (OSError, ValueError) as exc:
            raise LlmuxError(
                f"[[auth.issuers]] {item.issuer}: cannot read its keys: {exc}"
            ) from None
        out.append(issuer)
    return out
