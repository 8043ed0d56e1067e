"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness), both public and cheap
(docs/observability.md#health-and-shutdown).

``/healthz`` answers 200 while the process serves at all, draining included: no I/O.
``/readyz`` answers 200 with its checks when this replica should get traffic, else
503 with ``Retry-After`` and the checks, ``failed`` on the ones that failed
(:mod:`llmux.server.health`); 503 while the server drains (:mod:`llmux.server.drain`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from llmux.server.drain import Drain
from llmux.server.health import ReadinessProbe

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store"}


@router.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    probe: ReadinessProbe = state.readiness
    drain: Drain = state.drain
    result = await probe.check(state.services, drain.draining)
    if result.ready:
        return JSONResponse(result.body(), headers=NO_STORE)
    return JSONResponse(result.body(), status_code=503, headers={**NO_STORE, "Retry-After": "1"})
