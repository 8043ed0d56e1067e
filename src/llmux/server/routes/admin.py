"""Operator views: ``GET /admin/upstreams`` shows each upstream's health, load, breaker
state and models (never its API key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from llmux.server.deps import context, gateway

router = APIRouter()


@router.get("/admin/upstreams")
async def upstreams(request: Request) -> dict[str, Any]:
    return {"upstreams": gateway(request).upstream_snapshot(context(request))}
