"""Everything the server serves with, built from the settings: one object the app's
lifespan owns (or a test hands in, with fakes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llmux.config import Settings
from llmux.engine.engine import LocalEngine
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.models.bundled import ensure_bundled
from llmux.models.manager import ModelManager
from llmux.models.store import ModelStore
from llmux.policies import Policy
from llmux.policies.access_log import AccessLog
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.upstream.router import UpstreamRouter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    gateway: Gateway
    history: ChatHistory
    database: Database | None = None

    async def start(self) -> None:
        if self.database is not None:
            await self.database.open()  # migrates the schema to the newest version
        await self.gateway.start()

    async def aclose(self) -> None:
        try:
            await self.gateway.aclose()
        finally:
            if self.database is not None:
                await self.database.aclose()


def policies(settings: Settings) -> list[Policy]:
    """The configured policy chain, outermost first."""
    chain: list[Policy] = []
    if settings.server.access_log:
        chain.append(AccessLog())
    return chain


def build_services(settings: Settings) -> Services:
    """The database, the model store, the engine and the gateway, each from its own
    section; :meth:`Services.start` opens them."""
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    db = Database(database_url(settings.storage.database_url, settings.home_dir))
    store = ModelStore(settings.models_dir)
    ensure_bundled(store, settings.store.bundled_model)
    gateway = Gateway(
        LocalEngine(store, settings.engine),
        manager=ModelManager(store, settings.store),
        upstreams=UpstreamRouter(settings.upstreams),
        aliases=settings.gateway.aliases,
        policies=policies(settings),
    )
    log.info("serving models from %s", store.root)
    history = ChatHistory(SqlConversations(db), gateway)
    return Services(gateway=gateway, history=history, database=db)
