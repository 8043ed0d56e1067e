"""The gateway's metrics policy: counts every model operation when it ends.

Metadata only (``needs_body = False``), so the relay fast path keeps going. It is the
outermost policy, so its ``finished`` runs last and reads what the others learned
(``ctx.facts``: a refusal's reason, redactions, the moderation verdict, the cost; the
cache's ``X-Llmux-Cache`` header). Per operation it costs a few label look-ups and
histogram observations, and one generator hop per item for the in-flight gauge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from llmux.core.context import RequestContext
from llmux.errors import ContentRefused
from llmux.observability.metrics import Metrics, ModelLabels, route_label
from llmux.observability.sources import (
    Engine,
    counter_source,
    engine_source,
    upstream_source,
    value_source,
)
from llmux.policies import Handler, Operation, Outcome
from llmux.policies.access_log import status_code
from llmux.policies.meter import CACHE_HEADER

if TYPE_CHECKING:
    from llmux.gateway import Gateway

REFUSING = frozenset((402, 429))


class Queue(Protocol):
    @property
    def queued(self) -> int: ...


class Trail(Protocol):
    @property
    def backlog(self) -> int: ...

    def written(self) -> int: ...


class Counted(Protocol):
    completed: int
    failed: int


class BatchWork(Protocol):
    @property
    def tally(self) -> Counted: ...

    @property
    def running(self) -> int: ...


def status_of(outcome: Outcome) -> str:
    """The HTTP status the client got, or its error's status when a stream that had
    started failed part-way; 499 when the client left first (as the request line)."""
    return str(status_code(outcome))


def operation_name(ctx: RequestContext, op: Operation) -> str:
    """``gen_ai.operation.name``: chat, text_completion or embeddings."""
    if op.kind == "embed":
        return "embeddings"
    route = ctx.route
    if route.endswith("/generate") or ("completion" in route and "chat" not in route):
        return "text_completion"
    return "chat"


class RequestMetrics:
    needs_body = False

    def __init__(self, metrics: Metrics, labels: ModelLabels, routes: frozenset[str]) -> None:
        self.m = metrics
        self.labels = labels
        self.routes = routes

    def watch(
        self,
        gateway: Gateway,
        engine: Engine | None = None,
        usage: Queue | None = None,
        audit: Trail | None = None,
    ) -> None:
        """Label models by what ``gateway`` serves; read the engine's schedulers, the
        upstreams, the usage writer's queue and the audit spool when scraped."""
        self.labels.served = gateway.serves
        sources = self.m.scraped.sources
        if engine is not None:
            sources.append(engine_source(engine))
        sources.append(upstream_source(lambda: list(gateway.upstreams.upstreams.values())))
        if usage is not None:
            sources.append(value_source("llmux_usage_queue_depth", "Usage records waiting to be written", lambda: usage.queued))  # fmt: skip
        if audit is not None:
            sources.append(value_source("llmux_audit_backlog", "Audit records spooled, not yet in the database", lambda: audit.backlog))  # fmt: skip
            sources.append(counter_source("llmux_audit_records", "Audit records written (this replica's sequence number)", audit.written))  # fmt: skip

    def watch_batches(self, worker: BatchWork) -> None:
        """The Batch API worker's lines and running batches, read when scraped."""
        sources = self.m.scraped.sources
        sources.append(counter_source("llmux_batch_lines_completed", "Batch lines this replica finished with a 2xx answer", lambda: worker.tally.completed))  # fmt: skip
        sources.append(counter_source("llmux_batch_lines_failed", "Batch lines this replica finished with an error", lambda: worker.tally.failed))  # fmt: skip
        sources.append(value_source("llmux_batches_running", "Batches whose lines run on this replica now", lambda: worker.running))  # fmt: skip

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        return self._run(ctx, op, next)

    async def _run(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        gauge = self.m.in_flight.labels(ctx.api)
        gauge.inc()
        items = next(ctx, op)
        try:
            async for item in items:
                yield item
        finally:
            gauge.dec()
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        m = self.m
        model = self.labels(op.model)
        backend = op.backend
        status = status_of(outcome)
        m.requests.labels(ctx.api, route_label(ctx.route, self.routes), model, backend, status).inc()  # fmt: skip
        m.duration.labels(ctx.api, model, backend).observe(outcome.latency_s)
        u = outcome.usage
        if u.prompt_tokens:
            m.tokens.labels(model, backend, "prompt").inc(u.prompt_tokens)
        if u.completion_tokens:
            m.tokens.labels(model, backend, "completion").inc(u.completion_tokens)
        if u.cached_tokens:
            m.tokens.labels(model, backend, "cached").inc(u.cached_tokens)
        if outcome.ttft_s is not None and outcome.error is None:
            m.ttft.labels(ctx.api, model, backend).observe(outcome.ttft_s)
            self._overhead(ctx, op, outcome)
        tpot = per_token(outcome)
        if tpot is not None:
            m.tpot.labels(model, backend).observe(tpot)
        self._genai(ctx, op, outcome, model, tpot)
        self._policies(ctx, outcome)

    def _overhead(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        backend_ttft = ctx.facts.get("backend_ttft_s")
        if backend_ttft is None or outcome.ttft_s is None or not outcome.started:
            return  # a cache hit: no backend call to subtract
        arrived_first = outcome.started + outcome.ttft_s - ctx.started
        overhead = arrived_first - backend_ttft
        if 0 <= overhead < 3600:
            self.m.overhead.labels(ctx.api, op.backend).observe(overhead)

    def _genai(
        self, ctx: RequestContext, op: Operation, outcome: Outcome, model: str, tpot: float | None
    ) -> None:
        g = self.m.genai
        provider = "llama.cpp" if op.backend == "local" else ctx.facts.get("upstream", op.backend)
        attrs = (operation_name(ctx, op), provider, model)
        error = "" if outcome.error is None else outcome.error.code
        g.duration.labels(*attrs, error).observe(outcome.latency_s)
        g.client_duration.labels(*attrs).observe(outcome.latency_s)
        if outcome.ttft_s is not None and outcome.error is None:
            g.ttft.labels(*attrs).observe(outcome.ttft_s)
        if tpot is not None:
            g.tpot.labels(*attrs).observe(tpot)
        if outcome.usage_known:
            g.usage.labels(*attrs, "input").observe(outcome.usage.prompt_tokens)
            if op.kind == "chat":
                g.usage.labels(*attrs, "output").observe(outcome.usage.completion_tokens)

    def _policies(self, ctx: RequestContext, outcome: Outcome) -> None:
        m = self.m
        facts = ctx.facts
        looked = ctx.headers.get(CACHE_HEADER) if ctx.headers else None
        if looked:
            m.cache.labels(looked).inc()
        error = outcome.error
        if error is not None and (error.status in REFUSING or isinstance(error, ContentRefused)):
            m.refusals.labels(str(facts.get("refused") or error.code)).inc()
        for entity, n in (facts.get("redactions") or {}).items():
            m.redactions.labels(entity).inc(n)
        verdict = facts.get("moderation")
        if verdict:
            m.verdicts.labels(verdict).inc()
        cost = facts.get("cost")
        if cost and cost[0]:
            m.spend.labels(cost[1]).inc(cost[0] / 1_000_000)


def per_token(outcome: Outcome) -> float | None:
    """Decode seconds per output token after the first, when there were two or more."""
    n = outcome.usage.completion_tokens
    if outcome.ttft_s is None or n < 2 or not outcome.ok:
        return None
    return max(outcome.latency_s - outcome.ttft_s, 0.0) / (n - 1)
