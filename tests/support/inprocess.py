"""The real app, assembled in-process around a fake backend: routes, middleware,
gateway, policies and a real SQLite history, served through Starlette's TestClient
(an ``httpx.Client``, so the official ``openai`` and ``ollama`` clients can use it as
their HTTP client). No model and no server process: each test runs in milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from llmux.audit.trail import AuditTrail, build_audit
from llmux.auth.control import AccessControl
from llmux.auth.secrets import Keyring, load_master
from llmux.config import Settings, StoreSettings
from llmux.core.context import RequestContext
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.limits.estimate import Counter
from llmux.limits.policy import Quotas
from llmux.models.manager import ModelManager
from llmux.models.store import ModelStore
from llmux.policies import Handler, Operation, Outcome, PassThrough, Policy
from llmux.policies.access_log import AccessLog
from llmux.server.app import create_app
from llmux.services import (
    Services,
    access_control,
    body_log,
    build_batches,
    build_files,
    build_metrics,
    build_quotas,
    build_tracing,
    guardrails,
    log_scrubber,
)
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.upstream.router import UpstreamRouter
from llmux.upstream.settings import UpstreamSettings
from tests.support.fakes import FakeBackend

BASE = "http://127.0.0.1:11434"


@dataclass
class Seen:
    op: Operation
    ctx: RequestContext
    outcome: Outcome | None = None


@dataclass
class RecordingPolicy(PassThrough):
    """Records every operation with its context and, at the end, its outcome."""

    needs_body: bool = False
    seen: list[Seen] = field(default_factory=list)

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        self.seen.append(Seen(op, ctx))
        return next(ctx, op)

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        for s in reversed(self.seen):
            if s.ctx is ctx and s.outcome is None:
                s.outcome = outcome
                return


@dataclass
class App:
    client: TestClient
    backend: FakeBackend
    gateway: Gateway
    settings: Settings
    access: AccessControl
    quotas: Quotas | None = None
    audit: AuditTrail | None = None


@contextmanager
def in_process(
    tmp_path: Path,
    *,
    backend: FakeBackend | None = None,
    policies: Sequence[Policy] = (),
    upstreams: Sequence[UpstreamSettings] = (),
    gateway_cls: type[Gateway] = Gateway,
    quotas: bool = False,
    counter: Counter | None = None,
    observe: bool = False,
    audit: bool | dict[str, Any] = False,
    **settings: Any,
) -> Iterator[App]:
    """``quotas``: the quota policy as ``llmux serve`` builds it (limits, budgets, usage
    records in the test's SQLite; counters in process, or in Redis with ``redis=...``);
    ``counter`` counts prompts exactly for a backend named ``local``; ``audit``: the
    audit trail as ``llmux serve`` builds it (its spool in the test's home), a table: with
    those ``[audit]`` settings."""
    if isinstance(audit, dict):
        settings["audit"] = audit
    backend = backend or FakeBackend()
    config = Settings(home=tmp_path, upstreams=list(upstreams), **settings)
    db = Database(database_url(None, tmp_path))
    quota = build_quotas(config, db) if quotas else None
    if quota is not None:
        quota.counter = counter
    moderation, redaction = guardrails(config)
    recorder = build_metrics(config) if observe else None
    tracing, bodies = build_tracing(config), body_log(config, redaction)
    own: list[Policy] = [AccessLog()] if config.server.access_log else []
    own += [p for p in (tracing, bodies) if p is not None]  # as services.policies()
    chain = [*policies, *own, quota] if quota is not None else [*policies, *own]
    trail = build_audit(config, db, Keyring(load_master(None, tmp_path))) if audit else None
    chain = [trail.policy, *chain] if trail is not None else chain  # as services.policies()
    chain = [recorder, *chain] if recorder is not None else chain  # outermost, as in serve
    chain += [p for p in (moderation, redaction) if p.any_enabled]  # as services.policies()
    gateway = gateway_cls(
        backend,
        manager=ModelManager(ModelStore(tmp_path / "models"), StoreSettings()),
        upstreams=UpstreamRouter(config.upstreams),
        aliases=config.gateway.aliases,
        policies=chain,
    )
    moderation.bind(gateway.chat)
    if recorder is not None:
        recorder.watch(gateway, usage=quota.usage if quota is not None else None)
    access = access_control(config, db)
    history = ChatHistory(
        SqlConversations(db), gateway, admins_see_all=config.auth.admins_see_all,
        scrub=redaction.scrubber if redaction.any_enabled else None,
    )  # fmt: skip
    services = Services(
        gateway, history, db, access, quota, moderation=moderation,
        log_filter=log_scrubber(config, redaction), tracing=tracing, audit=trail,
    )  # fmt: skip
    services.metrics = recorder.m if recorder is not None else None
    services.files = build_files(config, db)
    services.batches = build_batches(config, db, services.files, gateway, moderation, access)
    app = create_app(config, services)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield App(client, backend, gateway, config, access, quota, trail)
