"""Backoff delays: per-status rules, jitter, ``Retry-After``, and the deadline cap."""

from __future__ import annotations

import random

from llmux.upstream.settings import RetryRule


def backoff(rule: RetryRule, attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based). A ``Retry-After``
    from the upstream wins over the computed delay."""
    if retry_after is not None:
        return retry_after
    delay = min(rule.max_s, rule.base_s * rule.multiplier**attempt)
    if rule.jitter:
        spread = delay * rule.jitter
        delay = delay - spread + random.random() * spread * 2
    return max(0.0, delay)


def fits(delay: float, now: float, deadline: float) -> bool:
    """Whether waiting ``delay`` still leaves time for a try before ``deadline``."""
    return now + delay < deadline - 0.01
