"""The app factory: ``create_app(settings, services=None)``.

Without ``services`` the lifespan builds them from the settings
(:func:`llmux.services.build_services`) and closes them at shutdown; a test can hand
in its own (a gateway over a fake backend) and run the app in-process.

Layers, outermost first: CORS > identity (request id, client, context) > request
log (when [server] access_log is on) > HTTP metrics > error boundary > drain (503 once a
SIGTERM came, server/drain.py) > guard (Host, Origin, body size) > audit (administrative actions'
records; when [audit] is on) > access (credentials, scopes; when access
control is on) > relay (fast path, keep-alives) > disconnect watch (cancels a model
request whose client left) > routes.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware

from llmux import __version__
from llmux.config import Settings
from llmux.observability import logs
from llmux.protocols import conversations as cw
from llmux.protocols.ollama import wire as ow
from llmux.protocols.openai import wire as aw
from llmux.server.access import Access, auth_enabled, warn_if_off
from llmux.server.audit import AuditLayer
from llmux.server.disconnect import DisconnectWatch
from llmux.server.drain import Drain, DrainLayer
from llmux.server.errors import ErrorBoundary, install_error_handlers
from llmux.server.guard import DEFAULT_ORIGINS, Guard, HostCheck, origin_regex
from llmux.server.health import ReadinessProbe
from llmux.server.identity import Identity
from llmux.server.metering import HttpMetrics
from llmux.server.openapi import openapi
from llmux.server.relay import Relay
from llmux.server.requestlog import RequestLog
from llmux.server.routes import (
    access,
    admin,
    audit,
    batches,
    conversations,
    deepseek,
    files,
    health,
    metrics,
    models,
    ollama,
    openai,
    quotas,
    ui,
    websocket,
)
from llmux.services import Services, build_services

log = logging.getLogger(__name__)
WIRE_MODELS: list[type[BaseModel]] = [
    ow.ChatBody, ow.GenerateBody, ow.EmbedBody, ow.EmbeddingsBody, ow.ModelBody, ow.CopyBody,
    models.TransferBody, models.CreateBody,
    aw.ChatCompletionBody, aw.CompletionBody, aw.EmbeddingBody,
    cw.CreateBody, cw.PatchBody, cw.MessageBody, cw.ReplyBody,
]  # fmt: skip


ROUTERS = (
    health, ollama, models, openai, deepseek, conversations, ui, admin, audit, access,
    quotas, websocket, metrics, files, batches,
)  # fmt: skip


def include_routes(app: FastAPI) -> None:
    """Every router, and every route flat in ``app.state.routes`` (FastAPI keeps included
    routers nested): a 405's Allow header and the access layer's scopes are read from
    it; FastAPI's own first (/openapi.json, /docs)."""
    app.state.routes = [r for r in app.router.routes if hasattr(r, "path")]
    for router in ROUTERS:
        app.include_router(router.router)
        app.state.routes.extend(router.router.routes)


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    auth_on = auth_enabled(settings)  # a LlmuxError to refuse an unsafe start
    warn_if_off(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services or build_services(settings)
        if own.batches is not None and own.batches.worker is not None:
            own.batches.worker.paused = lambda: app.state.drain.draining  # no new batches
        await own.start()
        app.state.services = own
        if auth_on:
            await bootstrap(own, settings)
        log.info("llmux %s ready", __version__)
        # Imports and start-up leave ~140k objects that live as long as the process. In
        # the oldest GC generation every full collection walks them all: the event loop
        # stopped for ~100 ms about once a second under load (in-flight requests' objects
        # are promoted fast and set off full passes), which was the p99 at concurrency
        # 32. Collect the start-up garbage, then keep the survivors out of the
        # collector's view.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # collectable again when the app is embedded in a longer process
            await own.aclose()

    logs.install(bodies=settings.server.log_bodies)  # prompts and replies: off unless asked
    app = FastAPI(
        title="llmux",
        version=__version__,
        lifespan=lifespan,
        # Swagger UI comes from a CDN, without an integrity check: off unless asked for
        docs_url="/docs" if settings.server.api_docs else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.drain = Drain(settings.server.drain_s)  # llmux serve's SIGTERM begins it
    app.state.readiness = ReadinessProbe(settings.store.bundled_model, bool(settings.redis.url))
    install_error_handlers(app)
    include_routes(app)
    app.openapi = lambda: openapi(app, WIRE_MODELS)  # type: ignore[method-assign]
    add_layers(app, settings, auth=auth_on)
    return app


async def bootstrap(own: Services, settings: Settings) -> None:
    """With access control on and no admin yet: the admin from the settings, or a
    one-time setup token on the console (never in the log)."""
    token = await own.access.bootstrap()
    if token is None:
        admin = await own.access.repo.first_admin()
        if admin is not None:
            await adopt(own, admin.id)
        return
    log.warning("access control is on and there is no admin yet; a setup token is printed")
    print(
        "\nllmux: no admin yet. Make the first one with this one-time setup token:\n"
        f"  curl {settings.base_url}/auth/setup -d "
        f'\'{{"token": "{token}", "name": "admin", "password": "..."}}\'\n'
        "  (or: llmux users add NAME --admin, on this machine)\n",
        file=sys.stderr,
        flush=True,
    )


async def adopt(own: Services, admin_id: str) -> None:
    """Conversations made while access control was off go to the first admin."""
    count = await own.history.repo.adopt(admin_id)
    if count:
        log.info(
            "access control: %d conversation(s) without an owner now belong to the admin", count
        )


def add_layers(app: FastAPI, settings: Settings, *, auth: bool = False) -> None:
    """The middleware, innermost first (each one added wraps the ones before)."""
    server = settings.server
    app.add_middleware(DisconnectWatch)
    app.add_middleware(Relay, keepalive_s=settings.gateway.keepalive_s)
    if auth:
        app.add_middleware(Access, metrics_token=settings.metrics.token)
    if settings.audit.enabled:  # admin actions' records; outside access: refusals too
        a = settings.audit
        app.add_middleware(AuditLayer, admin=a.record_admin, wait=a.wait_for_fsync)
    host, port = settings.bind
    hosts = HostCheck(server.allowed_hosts, bind_host=host)
    if hosts.public:
        log.warning(
            "bound to %s:%s, so llmux is reachable from the network; the Host check stays "
            "on: it accepts IP addresses, local names and [server] allowed_hosts (%s); set "
            "allowed_hosts to the names clients use (LLMUX_SERVER__ALLOWED_HOSTS)",
            host,
            port,
            ", ".join(server.allowed_hosts) or "none set",
        )
    app.add_middleware(
        Guard, origins=server.origins, hosts=hosts, max_body=server.max_body_bytes,
        max_upload=settings.batch.max_file_bytes,
    )  # fmt: skip
    app.add_middleware(DrainLayer, drain=app.state.drain)  # refusals in the caller's shape
    app.add_middleware(ErrorBoundary)
    app.add_middleware(HttpMetrics)  # sees the status the boundary answered with
    if server.access_log:  # a line for each request no model operation logged
        app.add_middleware(RequestLog)
    app.add_middleware(Identity, trusted_proxies=server.trusted_proxies)
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=origin_regex([*DEFAULT_ORIGINS, *server.origins]),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["*"],
    )
