"""What ``/metrics`` reads when it is scraped: the engine's schedulers, the upstreams
and their breakers, and the depth of the queues that write behind requests.

Each function returns a source for :class:`~llmux.observability.metrics.Scraped`: a
callable that yields metric families built from the parts' own plain counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from llmux.observability.metrics import BREAKER_STATES, counter, gauge, histogram
from llmux.observability.stats import EngineStats, LoopStats, UpstreamStats


class Scheduler(Protocol):
    stats: LoopStats
    slots: list[Any]
    n_ctx: int

    @property
    def running(self) -> int: ...

    @property
    def kv_used(self) -> int: ...


class Engine(Protocol):
    stats: EngineStats

    def schedulers(self) -> list[tuple[str, Any, int]]: ...


_LOOP_COUNTERS = (
    ("llmux_engine_steps", "Scheduler steps that decoded", "steps"),
    ("llmux_engine_slot_steps", "Slots times steps", "slot_steps"),
    ("llmux_engine_busy_slot_steps", "Running sequences summed over steps", "busy_slot_steps"),
    ("llmux_engine_prompt_tokens", "Prompt tokens of the sequences started", "prompt_tokens"),
    (
        "llmux_engine_prefix_cache_hit_tokens",
        "Prompt tokens reused from the prefix cache",
        "cached_tokens",
    ),
    ("llmux_engine_generated_tokens", "Tokens generated", "generated_tokens"),
)
_LOOP_GAUGES = (
    ("llmux_engine_queue_depth", "Requests admitted and waiting for a slot"),
    ("llmux_engine_running_sequences", "Sequences running"),
    ("llmux_engine_slots", "Parallel sequence slots"),
    ("llmux_engine_batch_utilization", "Busy slots over slots, recent steps (0 when idle)"),
    ("llmux_engine_kv_cells_used", "KV cache cells holding tokens"),
    ("llmux_engine_kv_cells", "KV cache cells"),
)


def engine_source(engine: Engine) -> Callable[[], Iterator[Any]]:
    def collect() -> Iterator[Any]:
        loops = engine.schedulers()
        counters = {n: counter(n, doc, ["model"]) for n, doc, _ in _LOOP_COUNTERS}
        gauges = {n: GaugeMetricFamily(n, doc, labels=["model"]) for n, doc in _LOOP_GAUGES}
        batch = HistogramMetricFamily(
            "llmux_engine_batch_sequences", "Sequences per decode call", labels=["model"]
        )
        for name, loop, queued in loops:
            s: LoopStats = loop.stats
            for n, _, attr in _LOOP_COUNTERS:
                counters[n].add_metric([name], getattr(s, attr))
            values = (
                queued, loop.running, len(loop.slots), s.utilization(),
                loop.kv_used, loop.n_ctx * len(loop.slots),
            )  # fmt: skip
            for (n, _), value in zip(_LOOP_GAUGES, values, strict=True):
                gauges[n].add_metric([name], value)
            histogram(batch, [name], s.batch)
        yield from counters.values()
        yield from gauges.values()
        yield batch
        yield from _engine_lifecycle(engine.stats, len(loops))

    return collect


def _engine_lifecycle(stats: EngineStats, loaded: int) -> Iterator[Any]:
    yield gauge("llmux_engine_loaded_models", "Models loaded", loaded)
    loads = counter("llmux_engine_loads", "Model loads", ["model"])
    for model, n in list(stats.loads.items()):
        loads.add_metric([model], n)
    evictions = counter("llmux_engine_evictions", "Models unloaded to make room", ["model"])
    for model, n in list(stats.evictions.items()):
        evictions.add_metric([model], n)
    seconds = HistogramMetricFamily("llmux_engine_load_seconds", "Time to load a model")
    histogram(seconds, [], stats.load_seconds)
    yield loads
    yield evictions
    yield seconds


class Member(Protocol):
    name: str
    stats: UpstreamStats
    breaker: Any


def upstream_source(members: Callable[[], list[Member]]) -> Callable[[], Iterator[Any]]:
    def collect() -> Iterator[Any]:
        latency = HistogramMetricFamily(
            "llmux_upstream_request_duration_seconds", "Answered upstream calls, first"
            " attempt to end", labels=["upstream"],
        )  # fmt: skip
        errors = counter("llmux_upstream_errors", "Failed attempts, by kind", ["upstream", "kind"])  # fmt: skip
        retries = counter("llmux_upstream_retries", "Attempts retried", ["upstream"])
        failovers = counter("llmux_upstream_failovers", "Requests passed on to the next member after this one failed", ["upstream"])  # fmt: skip
        state = GaugeMetricFamily(
            "llmux_upstream_breaker_state", "0 closed, 1 half-open, 2 open", labels=["upstream"]
        )
        for m in members():
            s = m.stats
            histogram(latency, [m.name], s.latency)
            for kind, n in list(s.errors.items()):
                errors.add_metric([m.name, kind], n)
            retries.add_metric([m.name], s.retries)
            failovers.add_metric([m.name], s.failovers)
            if m.breaker is not None:
                state.add_metric([m.name], BREAKER_STATES.get(m.breaker.peek(), 0))
        yield from (latency, errors, retries, failovers, state)

    return collect


def value_source(name: str, doc: str, read: Callable[[], float]) -> Callable[[], Iterator[Any]]:
    """One gauge read from ``read`` (a queue's depth)."""

    def collect() -> Iterator[Any]:
        yield gauge(name, doc, read())

    return collect


def counter_source(name: str, doc: str, read: Callable[[], float]) -> Callable[[], Iterator[Any]]:
    """One counter read from ``read`` (a sequence number that only grows)."""

    def collect() -> Iterator[Any]:
        family = counter(name, doc, [])
        family.add_metric([], read())
        yield family

    return collect
