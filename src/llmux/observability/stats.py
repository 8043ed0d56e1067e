"""Plain counters the engine and the upstreams keep, with no metrics library.

The engine's scheduler thread and the upstream pools count into these as they work;
the metrics registry (:mod:`llmux.observability.metrics`) reads them when Prometheus
scrapes, so a part that is measured never imports ``prometheus_client`` and pays an
integer add per event. One writer per object (the scheduler thread, or the event loop);
a scrape that reads mid-update is off by at most one event.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

# seconds; 0.8 is there so that a "P99 above 800 ms" rule falls on a bucket boundary
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)  # fmt: skip
PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
SEQUENCES = (1, 2, 4, 8, 16, 32, 64)
RECENT_WEIGHT = 0.1  # of each step in the recent utilisation (an average over ~20 steps)


class Buckets:
    """A histogram: counts per upper bound (the last one is +Inf), sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = SECONDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


@dataclass(slots=True)
class LoopStats:
    """One loaded model's scheduler, counted by its thread."""

    steps: int = 0  # scheduler steps that decoded something
    slot_steps: int = 0  # slots x steps
    busy_slot_steps: int = 0  # running sequences summed over steps
    prompt_tokens: int = 0  # prompt tokens of the sequences started
    cached_tokens: int = 0  # ... of them reused from the prefix cache
    generated_tokens: int = 0
    yielded_steps: int = 0  # steps background sequences sat out for an interactive prompt
    batch: Buckets = field(default_factory=lambda: Buckets(SEQUENCES))  # sequences per decode
    recent: float = 0.0  # busy slots / slots, averaged over the last ~20 steps
    last_step: float = 0.0  # time.monotonic() of the last step

    def step(self, busy: int, slots: int) -> None:
        self.steps += 1
        self.slot_steps += slots
        self.busy_slot_steps += busy
        self.recent += (busy / slots - self.recent) * RECENT_WEIGHT
        self.last_step = time.monotonic()

    def utilization(self, idle_after_s: float = 1.0) -> float:
        """Busy slots over slots in the recent steps; 0 once the model has been idle
        for ``idle_after_s`` (the scheduler only steps while it has work)."""
        if time.monotonic() - self.last_step > idle_after_s:
            return 0.0
        return self.recent


@dataclass(slots=True)
class EngineStats:
    """Model loads and evictions, by model name."""

    loads: dict[str, int] = field(default_factory=dict)
    evictions: dict[str, int] = field(default_factory=dict)
    load_seconds: Buckets = field(default_factory=Buckets)

    def loaded(self, model: str, seconds: float) -> None:
        self.loads[model] = self.loads.get(model, 0) + 1
        self.load_seconds.observe(seconds)

    def evicted(self, model: str) -> None:
        self.evictions[model] = self.evictions.get(model, 0) + 1


@dataclass(slots=True)
class UpstreamStats:
    """One upstream's calls: latency of answered calls, failures by kind, retries, and
    failovers away from it."""

    latency: Buckets = field(default_factory=Buckets)
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    failovers: int = 0

    def failed(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
