"""Everything the server serves with, built from the settings: one object the app's
lifespan owns (or a test hands in, with fakes)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmux import __version__
from llmux.audit.trail import AuditTrail, build_audit
from llmux.auth.control import AccessControl
from llmux.auth.scopes import INFERENCE, routes_with
from llmux.auth.secrets import Keyring, load_master
from llmux.auth.tokens import ExternalIssuer
from llmux.batch.batches import Batches
from llmux.batch.files import Files, Limits
from llmux.batch.runner import LineRunner
from llmux.batch.worker import BatchWorker
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
from llmux.observability.metrics import Metrics, ModelLabels
from llmux.observability.recorder import RequestMetrics
from llmux.policies import Policy
from llmux.policies.access_log import AccessLog, BodyLog
from llmux.policies.cache import Cache
from llmux.policies.cachestore import MemoryCache, RedisCache
from llmux.policies.moderation import Moderation
from llmux.policies.redaction import Redaction, ScrubLogs
from llmux.policies.redactor import Redactor
from llmux.policies.semantic import Semantic
from llmux.policies.settings import ModerationSettings
from llmux.storage.batches import SqlBatches
from llmux.storage.blobs import SqlBlobs
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.storage.files import SqlFiles
from llmux.storage.principals import SqlPrincipals
from llmux.storage.usage import SqlUsage
from llmux.upstream.router import UpstreamRouter

if TYPE_CHECKING:
    from llmux.observability.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    gateway: Gateway
    history: ChatHistory
    database: Database | None = None
    access_control: AccessControl | None = None
    quotas: Quotas | None = None
    reconcile_s: float = 0.0
    cache: Cache | None = None
    moderation: Moderation = field(default_factory=lambda: Moderation(ModerationSettings()))
    log_filter: ScrubLogs | None = None  # masks personal data in log lines, while served
    metrics: Metrics | None = None  # GET /metrics reads its registry
    files: Files | None = None  # the Batch API's files
    batches: Batches | None = None  # the Batch API's batches and this replica's worker
    tracing: Tracing | None = None  # its spans are flushed at shutdown
    audit: AuditTrail | None = None  # the audit trail's spool and drainer

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
        if self.log_filter is not None:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self.log_filter)
        if self.database is not None:
            await self.database.open()  # migrates the schema to the newest version
        if self.audit is not None:
            await self.audit.start()  # the chain continues from the spool or the table
        if self.usage is not None:
            self.usage.start()
        if self.quotas is not None:
            self.quotas.start(self.reconcile_s)
        await self.gateway.start()
        if self.batches is not None:
            self.batches.start()

    async def aclose(self) -> None:
        try:
            if self.batches is not None:
                await self.batches.aclose()  # records what finished, hands its lease back
            await self.gateway.aclose()
            if self.access_control is not None:
                await self.access_control.aclose()
            if self.quotas is not None:
                await self.quotas.aclose()  # settles what is in flight
                if self.quotas.usage is not None:
                    await self.quotas.usage.aclose()  # writes what is queued
                if self.quotas.limiter is not None:
                    await self.quotas.limiter.aclose()
            if self.cache is not None:
                await self.cache.aclose()  # finishes its Redis writes
            if self.audit is not None:
                await self.audit.aclose()  # the last fsync, the spool drained
            if self.tracing is not None:
                await asyncio.to_thread(self.tracing.close)  # exports the buffered spans
        finally:
            if self.database is not None:
                await self.database.aclose()
            if self.log_filter is not None:
                for handler in logging.getLogger().handlers:
                    handler.removeFilter(self.log_filter)


def policies(
    settings: Settings,
    quotas: Quotas | None = None,
    moderation: Moderation | None = None,
    redaction: Redaction | None = None,
    cache: Cache | None = None,
    metrics: RequestMetrics | None = None,
    tracing: Tracing | None = None,
    bodies: BodyLog | None = None,
    audit: AuditTrail | None = None,
) -> list[Policy]:
    """The configured policy chain, outermost first: metrics (their ``finished`` runs
    last and reads what the others learned), the audit trail and the access log see
    refusals too;
    moderation sees the caller's text, redaction turns it into what backends may see
    (docs/guardrails.md)."""
    chain: list[Policy] = [metrics] if metrics is not None else []
    if audit is not None:  # next: it sees every refusal; it never refuses but to fail closed
        chain.append(audit.policy)
    if settings.server.access_log:
        chain.append(AccessLog())
    if tracing is not None:  # [tracing] enabled; absent (not imported) otherwise
        chain.append(tracing)
    if bodies is not None:  # [server] log_bodies: the caller's text and the final reply
        chain.append(bodies)
    if quotas is not None:
        chain.append(quotas)
    if moderation is not None and moderation.any_enabled:
        chain.append(moderation)
    if redaction is not None and redaction.any_enabled:
        chain.append(redaction)
    if cache is not None:  # innermost: a hit passes every other policy as a reply does
        chain.append(cache)
    return chain


def build_cache(settings: Settings) -> Cache | None:
    """The response cache, when ``[cache]`` turns it on (top level, for a key or a
    model): L1 in this process unless ``memory_bytes = 0``, L2 in Redis with
    ``redis = true`` (anywhere in the table) and ``[redis] url``; the semantic index
    with ``semantic = true`` (anywhere)."""
    s = settings.cache
    if not s.active:
        return None
    redis: RedisCache | None = None
    if s.redis or any(t.get("redis") is True for t in s.overrides()):
        if not settings.redis.url:
            raise LlmuxError("[cache] redis = true needs [redis] url (redis://HOST:PORT/DB)")
        try:
            redis = RedisCache(settings.redis.url, settings.redis.prefix)
        except ImportError:
            raise LlmuxError(
                "[cache] redis = true but the redis client is not installed; install it with "
                "`pip install 'llmux[redis]'`"
            ) from None
    memory = MemoryCache(s.memory_bytes) if s.memory_bytes > 0 else None
    semantic = Semantic(s.semantic_entries) if s.semantic_active else None
    return Cache(s, memory, redis, semantic=semantic)


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
    moderation, redaction = guardrails(settings)
    cache = build_cache(settings)
    recorder = build_metrics(settings)
    tracing, bodies = build_tracing(settings), body_log(settings, redaction)
    keyring = Keyring(load_master(settings.auth.secret, settings.home_dir))
    audit = build_audit(settings, db, keyring)
    gateway = Gateway(
        engine,
        manager=ModelManager(store, settings.store),
        upstreams=UpstreamRouter(settings.upstreams),
        aliases=settings.gateway.aliases,
        policies=policies(
            settings, quotas, moderation, redaction, cache, recorder, tracing, bodies, audit
        ),
        digest=engine.digest,
    )
    if recorder is not None:
        recorder.watch(gateway, engine, quotas.usage, audit)
    if cache is not None:
        cache.bind(gateway.served_by, gateway.embed)  # embed: the semantic cache's model
    moderation.bind(gateway.chat)  # its judge model, if one is set, asks through the gateway
    log.info("serving models from %s", store.root)
    history = ChatHistory(
        SqlConversations(db), gateway, admins_see_all=settings.auth.admins_see_all,
        scrub=redaction.scrubber if redaction.any_enabled else None,
    )  # fmt: skip
    access = access_control(settings, db)
    files = build_files(settings, db)
    batches = build_batches(settings, db, files, gateway, moderation, access)
    if recorder is not None and batches.worker is not None:
        recorder.watch_batches(batches.worker)
    return Services(
        gateway=gateway, history=history, database=db, access_control=access, quotas=quotas,
        reconcile_s=settings.usage.reconcile_s, moderation=moderation, cache=cache,
        log_filter=log_scrubber(settings, redaction),
        metrics=recorder.m if recorder is not None else None, tracing=tracing, audit=audit,
        files=files, batches=batches,
    )  # fmt: skip


def build_files(settings: Settings, db: Database) -> Files:
    """The Batch API's files: rows in ``db``, bytes under ``<home>/files`` and, on
    PostgreSQL (``[batch] file_store``), in ``db`` too, so every replica reads them."""
    b = settings.batch
    shared = b.file_store == "database" or (b.file_store == "auto" and db.dialect == "postgresql")
    limits = Limits(b.max_file_bytes, b.max_lines)
    return Files(
        settings.home_dir / "files", SqlFiles(db), limits, SqlBlobs(db) if shared else None
    )


def build_batches(
    settings: Settings,
    db: Database,
    files: Files,
    gateway: Gateway,
    moderation: Moderation,
    access: AccessControl | None,
) -> Batches:
    """The Batch API's batches, and the worker that runs them here unless ``[batch]
    worker = false``; their lines go through ``gateway`` like HTTP requests, and a
    batch whose key is revoked (``access``) is cancelled."""
    repo = SqlBatches(db)
    worker = None
    if settings.batch.worker:
        runner = LineRunner(gateway, moderation, settings.server.reasoning_fields)
        revoked = access.revoked if access is not None else None
        worker = BatchWorker(repo, files, runner, settings.batch, revoked)
    return Batches(repo, files, worker)


def build_metrics(settings: Settings) -> RequestMetrics | None:
    """The metrics registry and the gateway's metrics policy, unless ``[metrics]
    enabled = false``; :meth:`RequestMetrics.watch` connects them to the parts."""
    s = settings.metrics
    if not s.enabled:
        return None
    metrics = Metrics(__version__, s.max_models)
    return RequestMetrics(
        metrics, ModelLabels(lambda _: False, s.max_models), routes_with(INFERENCE)
    )


def build_tracing(settings: Settings) -> Tracing | None:
    """The tracing policy when ``[tracing] enabled`` (OpenTelemetry is imported only
    then); a LlmuxError naming the extra when it is not installed."""
    if not settings.tracing.enabled:
        return None
    try:
        from llmux.observability.tracing import build
    except ImportError as exc:
        raise LlmuxError(
            f"[tracing] enabled = true but OpenTelemetry is not installed ({exc.name} is "
            "missing); install it with `pip install 'llmux[otel]'`"
        ) from None
    host, port = settings.bind
    return build(settings.tracing, host, port)


def log_scrubber(settings: Settings, redaction: Redaction) -> ScrubLogs | None:
    """The log filter that masks personal data: on with ``[redaction]`` (unless its
    ``logs = false``), and always while ``[server] log_bodies`` puts texts in the log."""
    base = redaction.base
    if base.enabled and base.settings.logs:
        return ScrubLogs(base)
    if settings.server.log_bodies:
        return ScrubLogs(Redactor(settings.redaction.model_copy(update={"enabled": True})))
    return None


def body_log(settings: Settings, redaction: Redaction) -> BodyLog | None:
    """Prompts and replies in the log, scrubbed, while ``[server] log_bodies`` is on."""
    if not settings.server.log_bodies:
        return None
    scrubber = log_scrubber(settings, redaction)
    assert scrubber is not None  # always one with log_bodies
    return BodyLog(scrubber.redactor.scrub)


def guardrails(settings: Settings) -> tuple[Moderation, Redaction]:
    """The content policies, with their word lists read and patterns compiled (a bad
    one fails here, when the server starts, naming the setting)."""
    try:
        moderation = Moderation(settings.moderation)
    except (OSError, ValueError, re.error) as exc:
        raise LlmuxError(f"[moderation]: {exc}") from None
    try:
        return moderation, Redaction(settings.redaction)
    except (OSError, ValueError, re.error) as exc:
        raise LlmuxError(f"[redaction]: {exc}") from None


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
