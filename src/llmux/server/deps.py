"""Typed accessors for what route handlers take from a request: the app's services,
its settings and the request's context (made by the identity layer)."""

from __future__ import annotations

from fastapi import Request

from llmux.config import Settings
from llmux.core.context import RequestContext
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.server.identity import api_for
from llmux.services import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def gateway(request: Request) -> Gateway:
    return services(request).gateway


def history(request: Request) -> ChatHistory:
    return services(request).history


def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def context(request: Request) -> RequestContext:
    ctx = request.scope.get("state", {}).get("ctx")
    if isinstance(ctx, RequestContext):
        return ctx
    path = request.url.path  # an app mounted without the identity layer
    return RequestContext(
        api=api_for(path), route=path, client=request.client.host if request.client else None
    )
