"""Traces: one OpenTelemetry span per model operation, exported by OTLP/HTTP.

Only imported when ``[tracing] enabled`` is true (:func:`llmux.services.build_tracing`;
the ``otel`` extra): off, nothing of OpenTelemetry is loaded and no policy is in the
chain. :class:`Tracing` is a metadata-only policy, so the relay fast path stays on;
at ``finished`` it writes the operation's spans after the fact, with explicit start
and end times, so nothing is added to the request's path but the span objects:

* the operation: ``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat
  smollm2:135m``), kind SERVER, with the OpenTelemetry GenAI attributes (operation,
  provider, request and response model, input, output and cached tokens, finish
  reasons, ``error.type``), ``server.address`` / ``server.port``, the HTTP status and
  ``llmux.*`` (request id, API, route, backend, upstream member, principal id, cache
  level, time to first token); its parent is the request's W3C ``traceparent``
  (``ctx.facts["traceparent"]``, put there by the identity layer), else it starts a
  trace;
* for the local engine, children derived from the final chunk's
  :class:`~llmux.core.chunks.Metrics` and the time to the first item: ``queue`` (from
  the operation's start to the model's work), ``load`` (the model loaded for it),
  ``prefill`` (the prompt's evaluation, ending at the first item) and ``decode`` (from
  the first item to the end);
* for an upstream (a pool member other than the local engine, or the relay fast
  path), one CLIENT child ``upstream {member}``.

A cache hit has no children (its replayed timings are the original request's).
Sampling follows a sampled ``traceparent``; otherwise ``sample_ratio`` of the traces
are kept. Spans leave in batches from the SDK's own thread; :meth:`Tracing.close`
flushes them at shutdown.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmux import __version__
from llmux.core.chunks import Metrics
from llmux.core.context import RequestContext
from llmux.observability.settings import TracingSettings
from llmux.policies import Operation, Outcome, PassThrough
from llmux.policies.access_log import status_code

PROVIDER = "llmux"  # gen_ai.provider.name of the spans llmux serves itself
LOCAL = "local"  # the engine's backend name (a pool member of that name is not upstream)
Phase = tuple[str, float, float]  # name, start, end (time.perf_counter() seconds)


def operation_name(ctx: RequestContext, op: Operation) -> str:
    """``gen_ai.operation.name``: ``chat``, ``text_completion`` or ``embeddings``."""
    if op.kind == "embed":
        return "embeddings"
    route = ctx.route
    if route.endswith("/generate") or (route.endswith("/completions") and "chat" not in route):
        return "text_completion"
    return "chat"


def phases(began: float, end: float, ttft_s: float | None, m: Metrics) -> list[Phase]:
    """The engine's phases of one operation, laid out backwards from its first item
    (or, without one, from the end less the decode time)."""
    first = began + ttft_s if ttft_s is not None else end - m.eval_ns / 1e9
    first = min(max(first, began), end)
    prefill = max(began, first - m.prompt_eval_ns / 1e9)
    load = max(began, prefill - m.load_ns / 1e9)
    out: list[Phase] = []
    if load > began:
        out.append(("queue", began, load))
    if prefill > load:
        out.append(("load", load, prefill))
    out.append(("prefill", prefill, first))
    out.append(("decode", first, end))
    return out


def attributes(ctx: RequestContext, op: Operation, outcome: Outcome) -> dict[str, Any]:
    """The operation span's attributes (no prompt, no reply; OpenTelemetry drops None)."""
    u, error, finish = outcome.usage, outcome.error, outcome.finish_reason
    out: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(ctx, op),
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": op.model,
        "gen_ai.response.model": outcome.served or op.model,
        "gen_ai.usage.input_tokens": u.prompt_tokens,
        "gen_ai.usage.output_tokens": u.completion_tokens,
        "http.response.status_code": status_code(outcome),
        "llmux.request_id": ctx.request_id,
        "llmux.api": ctx.api,
        "llmux.route": ctx.route,
        "llmux.backend": op.backend,
        "llmux.stream": op.stream,
    }
    optional = {
        "gen_ai.usage.cache_read.input_tokens": u.cached_tokens or None,
        "gen_ai.response.finish_reasons": (finish,) if finish else None,
        "gen_ai.request.choice.count": op.choices if op.choices > 1 else None,
        "gen_ai.request.max_tokens": op.max_output,
        "error.type": error.code if error is not None else None,
        "llmux.cancelled": True if outcome.cancelled else None,
        "llmux.upstream": ctx.facts.get("upstream"),
        "llmux.principal.id": ctx.principal.id,
        "llmux.cache": outcome.cache,
        "llmux.time_to_first_token_s": outcome.ttft_s,
    }
    out.update((k, v) for k, v in optional.items() if v is not None)
    return out


class Tracing(PassThrough):
    needs_body = False

    def __init__(self, provider: TracerProvider, *, address: str = "", port: int = 0) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("llmux", __version__)
        self.server: dict[str, Any] = {"server.address": address, "server.port": port}
        self._propagator = TraceContextTextMapPropagator()

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        now, end_ns = time.perf_counter(), time.time_ns()

        def wall(t: float) -> int:
            return end_ns - int((now - t) * 1e9)

        began = outcome.started or now - outcome.latency_s
        parent = ctx.facts.get("traceparent")
        span = self.tracer.start_span(
            f"{operation_name(ctx, op)} {op.model}",
            context=self._propagator.extract({"traceparent": parent}) if parent else None,
            kind=SpanKind.SERVER,
            attributes={**attributes(ctx, op, outcome), **self.server},
            start_time=wall(began),
        )
        if not span.is_recording():  # not sampled
            return
        if outcome.error is not None:
            span.set_status(Status(StatusCode.ERROR, outcome.error.code))
        inside = trace.set_span_in_context(span)
        for name, start, stop, kind, attrs in self._children(ctx, op, outcome, began, now):
            child = self.tracer.start_span(
                name, context=inside, kind=kind, attributes=attrs, start_time=wall(start)
            )
            child.end(end_time=wall(stop))
        span.end(end_time=end_ns)

    @staticmethod
    def _children(
        ctx: RequestContext, op: Operation, outcome: Outcome, began: float, end: float
    ) -> list[tuple[str, float, float, SpanKind, dict[str, Any]]]:
        if outcome.cache is not None:
            return []
        member = ctx.facts.get("upstream")
        if op.backend == "relay" or (member is not None and member != LOCAL):
            attrs = {"llmux.upstream": member or "relay", "gen_ai.request.model": op.model}
            ttft = ctx.facts.get("backend_ttft_s")
            if isinstance(ttft, float):
                attrs["llmux.time_to_first_token_s"] = ttft
            return [(f"upstream {member or 'relay'}", began, end, SpanKind.CLIENT, attrs)]
        m = outcome.metrics
        if m is None:
            return []
        u = outcome.usage
        tokens = {
            "prefill": {"gen_ai.usage.input_tokens": u.prompt_tokens,
                        "llmux.cached_tokens": u.cached_tokens},
            "decode": {"gen_ai.usage.output_tokens": u.completion_tokens},
        }  # fmt: skip
        return [
            (name, start, stop, SpanKind.INTERNAL, tokens.get(name, {}))
            for name, start, stop in phases(began, end, outcome.ttft_s, m)
        ]

    def close(self) -> None:
        """Export what is buffered and stop the exporting thread (blocking)."""
        self.provider.shutdown()


def build(
    settings: TracingSettings,
    address: str = "",
    port: int = 0,
    *,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """The policy with its provider: the configured sampler, ``service.name`` and an
    OTLP/HTTP exporter (or ``exporter``), batched. Reads no environment variable."""
    resource = Resource({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        resource=resource,
        shutdown_on_exit=False,  # Services.aclose shuts it down
    )
    if exporter is None:
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout_s
        )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, address=address, port=port)
