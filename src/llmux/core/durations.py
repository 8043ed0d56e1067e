"""Ollama's ``keep_alive`` values: a Go duration string or a number of seconds.

Negative means "keep forever" (returned as ``math.inf``), ``0`` means "unload after
the reply". A numeric *string* such as ``"3600"`` is invalid, as in Ollama.

Out of range: a duration string longer than a Go ``time.Duration`` holds (2**63 - 1 ns,
about 292 years) is invalid, as Go's ``time.ParseDuration`` says; a number of seconds
that long (``1e12``) is clamped to "forever", as a negative one is; ``NaN`` and
infinities are invalid (400). Every value returned is finite, ``0`` or ``math.inf``.
"""

from __future__ import annotations

import contextlib
import math
import re

from llmux.errors import InvalidRequest

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
MAX_SECONDS = (2**63 - 1) / 1e9  # the longest Go time.Duration
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds (may be negative)."""
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise InvalidRequest(f'time: invalid duration "{text}"', param="keep_alive")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise InvalidRequest(
                f'time: invalid duration "{text}" (use a unit, e.g. "5m", "1h30m", "300s")',
                param="keep_alive",
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise InvalidRequest(f'time: invalid duration "{text}"', param="keep_alive")
    if not total <= MAX_SECONDS:
        raise InvalidRequest(
            f'time: invalid duration "{text}" (longer than 2562047h, about 292 years; '
            'a negative duration such as "-1m" keeps the model loaded forever)',
            param="keep_alive",
        )
    return sign * total


def parse_setting_duration(value: object) -> float:
    """A server-wide keep-alive: like :func:`parse_keep_alive`, plus plain seconds as a
    string (``"3600"``, ``"-1"``), as Ollama reads OLLAMA_KEEP_ALIVE."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    seconds = parse_keep_alive(value)
    return 0.0 if seconds is None else seconds


def parse_keep_alive(value: object) -> float | None:
    """Return seconds to keep a model loaded; ``inf`` for forever; ``None`` if unset."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive must be a duration string or a number", param="keep_alive")
    if isinstance(value, int):
        seconds = math.inf if value >= MAX_SECONDS else float(max(value, -1))  # no overflow
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(
                f"keep_alive must be a finite number of seconds, not {value}", param="keep_alive"
            )
        seconds = value
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise InvalidRequest("keep_alive must be a duration string or a number", param="keep_alive")
    return math.inf if seconds < 0 or seconds >= MAX_SECONDS else seconds
