"""What a search of the trail asks for, from the query string or the command line:
``since``/``until`` (ISO 8601, UTC unless it says otherwise, or unix seconds),
``principal`` (``kind:id``, an id or a name), ``model`` (asked for or served),
``status`` (``200``, ``4xx``, ``500-599``), ``kind`` (``model`` or ``admin``),
``request_id``; ``limit`` (1-1000) and ``cursor`` (from the page before). A bad value
is a 400 naming its parameter."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmux.errors import InvalidRequest
from llmux.limits.reports import parse_time
from llmux.storage.audit import Filter, decode_cursor

MAX_LIMIT = 1000
_STATUS = re.compile(r"^([1-5])xx$|^(\d{3})(?:-(\d{3}))?$")


def parse_time_us(value: str | None, name: str) -> int | None:
    """Unix seconds or an ISO 8601 date or time (UTC unless it says), in microseconds."""
    seconds = parse_time(value, name)
    return None if seconds is None else int(seconds * 1_000_000)


def parse_status(value: str | None) -> tuple[int, int] | None:
    if value is None or not value.strip():
        return None
    found = _STATUS.match(value.strip().lower())
    if found is None:
        raise InvalidRequest(
            f"status: {value!r} is not a status (200), a class (4xx) or a range (500-599)",
            param="status",
        )
    if found.group(1):
        low = int(found.group(1)) * 100
        return low, low + 99
    low = int(found.group(2))
    high = int(found.group(3)) if found.group(3) else low
    if high < low:
        raise InvalidRequest("status: the range's end comes before its start", param="status")
    return low, high


@dataclass(frozen=True, slots=True)
class Search:
    where: Filter
    limit: int = 100
    cursor: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        since: str | None = None,
        until: str | None = None,
        principal: str | None = None,
        model: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        request_id: str | None = None,
        limit: int | str | None = None,
        cursor: str | None = None,
    ) -> Search:
        begin, end = parse_time_us(since, "since"), parse_time_us(until, "until")
        if begin is not None and end is not None and begin >= end:
            raise InvalidRequest("since must come before until", param="since")
        if kind not in (None, "", "model", "admin"):
            raise InvalidRequest("kind: model or admin", param="kind")
        try:
            count = 100 if limit in (None, "") else int(limit)
        except ValueError:
            count = 0
        if not 1 <= count <= MAX_LIMIT:
            raise InvalidRequest(f"limit: 1 to {MAX_LIMIT}", param="limit")
        if cursor:
            try:
                decode_cursor(cursor)
            except ValueError:
                raise InvalidRequest(
                    "cursor: not a cursor from this API (use next_cursor as it came)",
                    param="cursor",
                ) from None
        where = Filter(
            since_us=begin, until_us=end, principal=principal or None, model=model or None,
            status=parse_status(status), kind=kind or None, request_id=request_id or None,
        )  # fmt: skip
        return cls(where, count, cursor or None)
