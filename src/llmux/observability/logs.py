"""Log records that carry the request id.

The identity layer sets :data:`REQUEST_ID` for the duration of each request (tasks the
request starts inherit it); :func:`install` makes every log record carry it as
``record.request_id`` (``-`` outside a request), so :data:`LOG_FORMAT` can print it.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("llmux_request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def install() -> None:
    """Add ``request_id`` to every log record from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_llmux_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    factory._llmux_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
