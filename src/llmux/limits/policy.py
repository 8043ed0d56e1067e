"""The rate-limit policy: before a model operation starts, every applicable limit is
checked and charged in one atomic step (``gcra.py``); a refusal is a 429 in the API's
shape with ``Retry-After`` (whole seconds, rounded up), ``retry-after-ms`` and OpenAI's
``x-ratelimit-*-requests`` headers. Metadata only: the relay fast path stays on.

Limits so far (``[limits]``): requests per minute for each caller (its key, client or
user; the client address while access control is off) and for the whole server. With
``[redis] url`` the counters are shared by every replica; if Redis cannot be reached the
request is refused with 503, never counted per process instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from llmux.config import LimitsSettings
from llmux.core.context import RequestContext
from llmux.errors import RateLimited, ServerBusy
from llmux.limits.gcra import Decision, Limit, Limiter
from llmux.policies import Handler, Operation, PassThrough

log = logging.getLogger(__name__)


def caller(ctx: RequestContext) -> str:
    p = ctx.principal
    if p.anonymous:
        return f"addr:{ctx.client or 'unknown'}"
    return f"{p.kind}:{p.id}"


class RateLimits(PassThrough):
    needs_body = False

    def __init__(self, limiter: Limiter, settings: LimitsSettings) -> None:
        self.limiter = limiter
        self.settings = settings

    def limits_for(self, ctx: RequestContext) -> list[Limit]:
        out = []
        if self.settings.requests_per_minute:
            out.append(Limit(f"rpm:{caller(ctx)}", self.settings.requests_per_minute))
        if self.settings.global_requests_per_minute:
            out.append(Limit("rpm:global", self.settings.global_requests_per_minute))
        return out

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        limits = self.limits_for(ctx)
        return self._limited(ctx, op, next, limits) if limits else next(ctx, op)

    async def _limited(
        self, ctx: RequestContext, op: Operation, next: Handler, limits: list[Limit]
    ) -> AsyncIterator[Any]:
        try:
            decision = await self.limiter.acquire(limits)
        except (OSError, ConnectionError) as exc:
            raise self._unreachable(exc) from None
        except Exception as exc:  # redis-py's own errors
            if type(exc).__module__.startswith("redis"):
                raise self._unreachable(exc) from None
            raise
        if not decision.allowed:
            raise refusal(limits, decision)
        async for item in next(ctx, op):
            yield item

    @staticmethod
    def _unreachable(exc: BaseException) -> ServerBusy:
        log.warning("rate limits: Redis is unreachable: %s", exc)
        return ServerBusy(
            "rate limits are kept in Redis, which cannot be reached; try again shortly",
            retry_after=1,
        )


def refusal(limits: list[Limit], decision: Decision) -> RateLimited:
    """The 429 for a refused request, with the headers of its tightest limit."""
    tightest = min(range(len(limits)), key=lambda i: decision.remaining[i])
    limit = limits[tightest]
    headers = {
        "retry-after-ms": str(max(1, round(decision.retry_after_s * 1000))),
        "x-ratelimit-limit-requests": str(limit.count),
        "x-ratelimit-remaining-requests": str(decision.remaining[tightest]),
        "x-ratelimit-reset-requests": f"{decision.reset_s[tightest]:.3f}s",
    }
    return RateLimited(
        f"rate limit reached: {limit.count} requests per {limit.period_s:g} s; retry after "
        f"{decision.retry_after_s:.1f} s",
        retry_after=decision.retry_after_s,
        headers=headers,
    )
