"""The app factory: builds the ASGI app and the objects its lifespan owns."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from llmux import __version__
from llmux.config import Settings
from llmux.engine.engine import LocalEngine
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.models.bundled import ensure_bundled
from llmux.models.pull import Puller
from llmux.models.store import ModelStore
from llmux.server.errors import install_error_handlers
from llmux.server.guard import DEFAULT_ORIGINS, Guard, is_loopback, origin_regex
from llmux.server.relay import Relay
from llmux.server.routes import admin, conversations, deepseek, models, ollama, openai, ui
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.upstream.router import UpstreamRouter

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home_dir.mkdir(parents=True, exist_ok=True)
        db = Database(database_url(settings.database_url, settings.home_dir))
        await db.open()
        store = ModelStore(settings.models_dir)
        ensure_bundled(store, settings.bundled_model)
        engine = LocalEngine(store, settings)
        await engine.start()
        gateway = Gateway(
            store, engine, aliases=settings.aliases, upstreams=UpstreamRouter(settings.upstreams)
        )
        await gateway.start()
        app.state.gateway = gateway
        app.state.history = ChatHistory(SqlConversations(db), gateway)
        app.state.puller = Puller(store, settings)  # shares concurrent pulls of one model
        log.info("llmux %s serving models from %s", __version__, store.root)
        try:
            yield
        finally:
            await gateway.aclose()
            await db.aclose()

    app = FastAPI(
        title="llmux", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(ollama.router)
    app.include_router(models.router)
    app.include_router(openai.router)
    app.include_router(deepseek.router)
    app.include_router(conversations.router)
    app.include_router(ui.router)
    app.include_router(admin.router)
    app.add_middleware(Relay, keepalive_s=settings.gateway.keepalive_s)
    host, _ = settings.bind
    app.add_middleware(
        Guard,
        origins=settings.origins,
        check_host=is_loopback(host),
        max_body=settings.max_body_bytes,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=origin_regex([*DEFAULT_ORIGINS, *settings.origins]),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["*"],
    )
    return app
