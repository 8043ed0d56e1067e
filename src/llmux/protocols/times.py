"""The one spelling of times on the wire: RFC 3339 in UTC with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Precision = Literal["auto", "seconds", "milliseconds", "microseconds"]


def rfc3339(dt: datetime, timespec: Precision = "auto") -> str:
    return dt.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def epoch_rfc3339(epoch: float, timespec: Precision = "auto") -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC), timespec)


def now_rfc3339() -> str:
    """Ollama's ``created_at``: sub-second digits, UTC."""
    return rfc3339(datetime.now(UTC), "microseconds")


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 string or epoch seconds from another server, if it is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
