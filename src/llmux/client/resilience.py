"""Retries with backoff and a circuit breaker: the decisions, without the I/O.

Both clients run the same loop: ask :meth:`Attempts.admit` before sending, then report
the outcome with :meth:`Attempts.answered` or :meth:`Attempts.failed`, which say how
long to wait before the next try, or that there is none. A call is retried only while
nothing of its answer has reached the caller; a stream that started is never re-sent.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from llmux.client.errors import CircuitOpenError, RequestError, transport_error

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# failures that happen before the request left: re-sending cannot run anything twice
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry.

    ``max_attempts`` counts the first try; the n-th retry waits a random time between
    half and all of ``min(backoff * 2**(n-1), max_backoff)`` seconds, or what the
    server's ``Retry-After`` asks. No retry starts past ``total_timeout`` seconds after
    the first try.
    """

    max_attempts: int = 4
    backoff: float = 0.25
    max_backoff: float = 8.0
    total_timeout: float = 60.0
    statuses: frozenset[int] = RETRY_STATUSES

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling: float = min(self.backoff * 2.0 ** (retry - 1), self.max_backoff)
        return ceiling * rng.uniform(0.5, 1.0)


NO_RETRY = RetryPolicy(max_attempts=1)


def retry_after(
    headers: Mapping[str, str], now: Callable[[], datetime] | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or (lambda: datetime.now(UTC)))()).total_seconds())


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after ``threshold`` failures in a row; while open every call fails fast for
    ``cooldown`` seconds; then one trial call goes through, and its outcome closes or
    re-opens the circuit. Safe to share between threads and between clients."""

    threshold: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (cool-down over, a trial is allowed)."""
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() - self.opened_at < self.cooldown else "half-open"

    def admit(self, base_url: str) -> None:
        with self._lock:
            state = self.state
            if state == "closed":
                return
            if state == "half-open" and not self.trial:
                self.trial = True
                return
            left = self.cooldown - (self.clock() - (self.opened_at or 0.0))
        raise CircuitOpenError(
            f"llmux at {base_url} failed {self.failures} times in a row; not trying again for "
            f"{max(left, 0.0):.0f}s (circuit open). Check that `llmux serve` is running and "
            "healthy, or wait.",
            retry_in=max(left, 0.0),
        )

    def success(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.trial or self.failures >= self.threshold:
                self.opened_at, self.trial = self.clock(), False


class Attempts:
    """The tries of one call under a policy and a breaker."""

    def __init__(
        self,
        policy: RetryPolicy,
        breaker: CircuitBreaker | None,
        base_url: str,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy, self.breaker, self.base_url = policy, breaker, base_url
        self.rng, self.clock = rng, clock
        self.started = clock()
        self.tries = 0

    def admit(self) -> None:
        """Before each try: raises :class:`CircuitOpenError` while the circuit is open."""
        if self.breaker is not None:
            self.breaker.admit(self.base_url)
        self.tries += 1

    def answered(self, response: httpx.Response) -> float | None:
        """The seconds to wait before trying again, or ``None`` to hand the answer on."""
        status = response.status_code
        if self.breaker is not None:
            if status >= 500 and status in self.policy.statuses:
                self.breaker.failure()
            else:
                self.breaker.success()
        if status not in self.policy.statuses:
            return None
        return self._next_delay(retry_after(response.headers))

    def failed(self, exc: httpx.TransportError) -> float:
        """The seconds to wait before trying again; raises the SDK error when there is
        no next try."""
        if self.breaker is not None:
            self.breaker.failure()
        error: RequestError = transport_error(exc, self.base_url)
        delay = self._next_delay(None) if isinstance(exc, RETRY_ERRORS) else None
        if delay is None:
            raise error from exc
        return delay

    def _next_delay(self, asked: float | None) -> float | None:
        if self.tries >= self.policy.max_attempts:
            return None
        delay = asked if asked is not None else self.policy.delay(self.tries, self.rng)
        if self.clock() - self.started + delay > self.policy.total_timeout:
            return None
        return delay
