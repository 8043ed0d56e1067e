"""A circuit breaker per upstream: closed -> open -> half-open -> closed.

Count-based sliding window: once ``min_calls`` of the last ``window`` calls are in, a
failure rate at or above ``failure_rate`` opens the breaker; calls are refused for
``open_s``; then ``half_open_calls`` trial calls go through, and their failure rate
decides whether it closes (window cleared) or opens again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from llmux.upstream.settings import BreakerSettings

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.window: deque[bool] = deque(maxlen=settings.window)  # True = failure
        self._state: State = "closed"
        self.opened_at = 0.0
        self.trials_issued = 0
        self.trials: list[bool] = []
        self.opened_count = 0

    @property
    def state(self) -> State:
        if self._state == "open" and self.clock() >= self.opened_at + self.settings.open_s:
            self._state = "half_open"
            self.trials_issued = 0
            self.trials = []
        return self._state

    def peek(self) -> State:
        """:attr:`state` without moving it on (safe to read from another thread)."""
        if self._state == "open" and self.clock() >= self.opened_at + self.settings.open_s:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """Whether a call may go now; in half-open this takes one trial permit."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        if self.trials_issued < self.settings.half_open_calls:
            self.trials_issued += 1
            return True
        return False

    def available(self) -> bool:
        """Like :meth:`allow` without taking a permit (for ordering the pool)."""
        state = self.state
        return state == "closed" or (
            state == "half_open" and self.trials_issued < self.settings.half_open_calls
        )

    def record(self, failed: bool) -> None:
        state = self.state
        if state == "open":
            return  # a call admitted before the breaker opened
        if state == "half_open":
            self.trials.append(failed)
            if len(self.trials) >= self.settings.half_open_calls:
                if self._rate(self.trials) >= self.settings.failure_rate:
                    self._open()
                else:
                    self._state = "closed"
                    self.window.clear()
            return
        self.window.append(failed)
        if len(self.window) >= self.settings.min_calls and (
            self._rate(self.window) >= self.settings.failure_rate
        ):
            self._open()

    def _open(self) -> None:
        self._state = "open"
        self.opened_at = self.clock()
        self.window.clear()
        self.opened_count += 1

    @staticmethod
    def _rate(calls: deque[bool] | list[bool]) -> float:
        return sum(calls) / len(calls) if calls else 0.0

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        out: dict[str, Any] = {
            "state": state,
            "calls": len(self.window),
            "failure_rate": round(self._rate(self.window), 3),
            "times_opened": self.opened_count,
        }
        if state == "open":
            out["retry_in_s"] = round(self.opened_at + self.settings.open_s - self.clock(), 3)
        if state == "half_open":
            out["trials"] = {
                "issued": self.trials_issued,
                "done": len(self.trials),
                "failed": sum(self.trials),
            }
        return out
