"""Readiness: whether this replica should be sent traffic (``GET /readyz``).

The checks: the database answers ``SELECT 1``; Redis answers ``PING`` when ``[redis]
url`` is set; a model can be served (the default model, ``[store] bundled_model``, is
installed here, or at least one upstream is healthy by its last health check; with
neither configured there is nothing to check); and the server is not draining
(:mod:`llmux.server.drain`). A result is kept for :data:`CACHE_S`, and concurrent probes
share the one check that runs, so a probe storm costs one query a second. The answer
names each check ``ok`` or ``failed``; why one failed goes to the log (once, when it
starts failing), never to the unauthenticated caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from llmux.limits.allowance import Allowances
from llmux.limits.gcra import RedisLimiter
from llmux.services import Services

log = logging.getLogger(__name__)
CACHE_S = 1.0
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, bool]
    at: float = 0.0

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    def body(self) -> dict[str, Any]:
        status = "ready" if self.ready else "not ready"
        if not self.checks.get("accepting", True):
            status = "draining"
        checks = {name: "ok" if ok else "failed" for name, ok in self.checks.items()}
        return {"status": status, "checks": checks}


@dataclass(slots=True)
class ReadinessProbe:
    """The checks behind ``/readyz``, cached; one per app (``app.state.readiness``)."""

    default_model: str
    redis: bool  # [redis] url is set
    cache_s: float = CACHE_S
    last: Readiness | None = None
    failing: dict[str, str] = field(default_factory=dict)  # check -> why, as logged
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self, services: Services, draining: bool) -> Readiness:
        if draining:  # no I/O: the answer is no
            return Readiness({"accepting": False}, time.monotonic())
        if self.fresh():
            assert self.last is not None
            return self.last
        async with self.lock:  # the others wait for the check that runs
            if not self.fresh():
                self.last = await self.run(services)
            assert self.last is not None
            return self.last

    def fresh(self) -> bool:
        return self.last is not None and time.monotonic() - self.last.at < self.cache_s

    async def run(self, services: Services) -> Readiness:
        probes: dict[str, Awaitable[None]] = {}
        if services.database is not None:
            probes["database"] = self.database(services)
        if self.redis:
            probes["redis"] = self.ping(services)
        results = await asyncio.gather(*probes.values(), return_exceptions=True)
        why = {name: r for name, r in zip(probes, results, strict=True) if r is not None}
        checks = {name: name not in why for name in probes}
        models_ok, models_why = self.models(services)
        checks["models"] = models_ok
        reasons = {name: describe(exc) for name, exc in why.items()}
        if not models_ok:
            reasons["models"] = models_why
        self.note(reasons)
        return Readiness(checks, time.monotonic())

    @staticmethod
    async def database(services: Services) -> None:
        assert services.database is not None
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async with services.database.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    @staticmethod
    async def ping(services: Services) -> None:
        limiter = services.limiter
        if not isinstance(limiter, RedisLimiter | Allowances):
            raise RuntimeError("[redis] url is set but limits are not counted in Redis")
        redis = limiter.scripts.redis
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await redis.ping()

    def models(self, services: Services) -> tuple[bool, str]:
        gateway = services.gateway
        upstreams = list(gateway.upstreams.upstreams.values())
        if self.default_model and gateway.local.has(self.default_model):
            return True, ""
        if any(u.healthy for u in upstreams):
            return True, ""
        if not self.default_model and not upstreams:
            return True, ""  # nothing configured to check: models are pulled at run time
        parts = []
        if self.default_model:
            parts.append(f"the default model {self.default_model!r} is not installed")
        if upstreams:
            parts.append(f"none of the {len(upstreams)} upstream(s) is healthy")
        return False, " and ".join(parts)

    def note(self, reasons: dict[str, str]) -> None:
        """Log a check when it starts failing, changes its reason, or recovers."""
        for name, why in reasons.items():
            if self.failing.get(name) != why:
                log.warning("not ready: %s check failed: %s", name, why)
        for name in set(self.failing) - set(reasons):
            log.info("%s check passes again", name)
        self.failing = reasons


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer in {CHECK_TIMEOUT_S:.0f} s"
    reason = getattr(exc, "orig", None) or exc
    return f"{type(reason).__name__}: {str(reason)[:200]}"
