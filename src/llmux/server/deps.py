"""What route handlers take from the request: the app's gateway and a request context."""

from __future__ import annotations

from fastapi import Request

from llmux.config import Settings
from llmux.core.request import Api, RequestContext
from llmux.gateway import Gateway


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def settings(request: Request) -> Settings:
    s: Settings = request.app.state.settings
    return s


def context(request: Request, api: Api) -> RequestContext:
    return RequestContext(api=api, client=request.client.host if request.client else None)
