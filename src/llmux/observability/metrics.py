"""Prometheus metrics: one registry per app, the request families, and what is read at
scrape time.

:class:`Metrics` owns a ``CollectorRegistry`` (never the library's global one, so two
apps in one process, or a test's, never mix their series). It holds the families the
gateway's :class:`RequestMetrics` policy and the HTTP layer (``server/metering.py``)
count into, and a collector that reads, when ``/metrics`` is scraped, the plain
counters the engine and the upstreams keep (:mod:`llmux.observability.stats`), the
breaker states and the queues (usage writer, audit spool). The metric names, labels
and buckets are listed in docs/observability.md; the dashboard and the alert rules in
``deploy/`` are written against them.

Label values are bounded: a model name no backend serves is counted as ``other`` (and
at most ``[metrics] max_models`` names get their own series), a route is the path
template, an error is its status code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from llmux.observability.stats import PER_TOKEN, SECONDS, TOKENS, Buckets

OTHER = "other"
MODEL_MEMO = 10_000  # names remembered as served (an unserved name is checked each time)
_CONVERSATION = re.compile(r"^/api/conversations/[^/]+/(reply|regenerate)$")
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class ModelLabels:
    """The ``model`` label for a resolved name: the name while a backend serves it and
    fewer than ``limit`` names have their own series, else ``other``."""

    def __init__(self, served: Callable[[str], bool], limit: int = 100) -> None:
        self.served = served
        self.limit = limit
        self._kept: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        label = self._kept.get(name)
        if label is not None:
            return label
        try:
            known = bool(name) and self.served(name)
        except Exception:  # noqa: BLE001 - a bad name is just not served
            known = False
        if not known or len(self._kept) >= self.limit:
            return OTHER
        self._kept[name] = name
        return name


def route_label(route: str, routes: frozenset[str]) -> str:
    """A model operation's route as a bounded label."""
    if route in routes:
        return route
    if _CONVERSATION.match(route):
        return "/api/conversations/{id}/" + route.rsplit("/", 1)[1]
    return route if route.startswith("/internal/") and len(route) < 64 else OTHER


def _seconds(name: str, doc: str, labels: list[str], registry: CollectorRegistry) -> Histogram:
    return Histogram(name, doc, labels, registry=registry, buckets=SECONDS)


class Metrics:
    """The registry and the families; ``watch_*`` add what is read at scrape time."""

    def __init__(self, version: str, max_models: int = 100) -> None:
        # no ``*_created`` series: they double the series and no query here uses them
        # (the library's own switch, idempotent)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.max_models = max_models
        op = ["api", "model", "backend"]
        self.requests = Counter(
            "llmux_requests", "Model operations, by outcome (status: the HTTP status, or"
            " the error's when a stream failed part-way; 499 when the client left first)",
            ["api", "route", "model", "backend", "status"], registry=r,
        )  # fmt: skip
        self.duration = _seconds("llmux_request_duration_seconds", "Whole operation", op, r)
        self.ttft = _seconds("llmux_time_to_first_token_seconds", "Time to the first item", op, r)
        self.tpot = Histogram(
            "llmux_time_per_output_token_seconds", "Decode time per output token after the"
            " first", ["model", "backend"], registry=r, buckets=PER_TOKEN,
        )  # fmt: skip
        self.overhead = _seconds(
            "llmux_gateway_overhead_seconds", "Arrival to first item, less the backend's own"
            " time to its first item", ["api", "backend"], r,
        )  # fmt: skip
        self.tokens = Counter(
            "llmux_tokens", "Tokens (type: prompt, completion, cached)",
            ["model", "backend", "type"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("llmux_requests_in_flight", "Model operations running", ["api"], registry=r)  # fmt: skip
        self.http = Counter("llmux_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)  # fmt: skip
        self.http_duration = _seconds(
            "llmux_http_request_duration_seconds", "HTTP request to response end",
            ["method", "route"], r,
        )  # fmt: skip
        self.cache = Counter("llmux_cache_lookups", "Response cache lookups", ["result"], registry=r)  # fmt: skip
        self.refusals = Counter("llmux_refusals", "Requests refused, by reason", ["reason"], registry=r)  # fmt: skip
        self.redactions = Counter("llmux_redactions", "Values redacted, by entity type", ["entity"], registry=r)  # fmt: skip
        self.verdicts = Counter("llmux_moderation_verdicts", "Moderation verdicts", ["verdict"], registry=r)  # fmt: skip
        self.spend = Counter("llmux_spend", "Priced usage, in the currency's units", ["currency"], registry=r)  # fmt: skip
        Gauge("llmux_build_info", "The running llmux", ["version"], registry=r).labels(version).set(1)  # fmt: skip
        self.genai = GenAi(r)
        self.scraped = Scraped()
        r.register(self.scraped)

    def exposition(self) -> tuple[bytes, str]:
        """The text format a scrape gets, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class GenAi:
    """The OpenTelemetry GenAI semantic conventions' metrics, in Prometheus's spelling,
    so dashboards made for them work unchanged."""

    def __init__(self, r: CollectorRegistry) -> None:
        attrs = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self.ttft = _seconds(
            "gen_ai_server_time_to_first_token_seconds", "Time to generate the first token", attrs, r
        )  # fmt: skip
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds", "Time per output token after the"
            " first", attrs, registry=r, buckets=PER_TOKEN,
        )  # fmt: skip
        self.duration = _seconds(
            "gen_ai_server_request_duration_seconds", "Generative AI server request duration",
            [*attrs, "error_type"], r,
        )  # fmt: skip
        self.client_duration = _seconds(
            "gen_ai_client_operation_duration_seconds", "GenAI operation duration", attrs, r
        )
        self.usage = Histogram(
            "gen_ai_client_token_usage", "Input and output tokens used",
            [*attrs, "gen_ai_token_type"], registry=r, buckets=TOKENS,
        )  # fmt: skip


Source = Callable[[], Iterator[Any]]


class Scraped(Collector):
    """What is read when ``/metrics`` is scraped: each source yields metric families."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def describe(self) -> list[Any]:
        return []  # families vary with what is loaded: no describe-time check

    def collect(self) -> Iterator[Any]:
        for source in self.sources:
            yield from source()


def histogram(family: HistogramMetricFamily, labels: list[str], b: Buckets) -> None:
    family.add_metric(labels, b.cumulative(), b.sum)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)
