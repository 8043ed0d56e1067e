"""Log records: the request id on every one, text or JSON lines, secrets masked.

* **Request id**: the identity layer sets :data:`REQUEST_ID` for the duration of each
  request (tasks and threads the request starts inherit it); :func:`install` makes every
  log record carry it as ``record.request_id`` (``-`` outside a request).
* **Fields**: a line's structured data goes in ``extra={"fields": {...}}`` (:data:`FIELDS`):
  :class:`JsonFormatter` writes them as the JSON object's keys, :class:`TextFormatter`
  as ``key=value`` after the message. The request lines (``policies/access_log.py``,
  ``server/requestlog.py``) use them.
* **Secrets**: both formatters pass every line through :func:`mask_secrets` (API keys,
  bearer and basic credentials, ``Authorization``-like ``name=value`` pairs, JWTs),
  whatever logger wrote it; personal data is the redaction log filter's
  (``policies/redaction.py`` ``ScrubLogs``).
* **Bodies**: prompts and replies are logged only under the :data:`BODIES` logger, which
  is silent unless ``[server] log_bodies`` is on (:func:`install`).

:func:`configure` is how ``llmux serve`` sets up logging: one stderr handler, the
chosen format, ``log_level`` for llmux's own loggers (and uvicorn's), and at least
``info`` for other libraries, whose debug lines can carry SQL parameters and bodies.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("llmux_request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
FIELDS = "fields"  # the record attribute holding a line's fields (extra={"fields": ...})
BODIES = "llmux.bodies"  # prompts and replies: silent unless [server] log_bodies is on
SILENT = logging.CRITICAL + 10
LogFormat = Literal["text", "json"]

_MASK = "***"
_PAIR_NAMES = (
    "authorization", "api-key", "api_key", "apikey", "access_token", "access-token",
    "accesstoken", "secret", "password",
)  # fmt: skip
# (pattern, replacement, words one of which the lower-cased text must hold for the
# pattern to be tried: most lines hold none, and a substring test is ~50x cheaper)
_SECRETS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    # a credential after Bearer / Basic: 8+ token characters, not a plain word
    (
        re.compile(
            r"\b((?i:bearer|basic)\s+)(?=[\w.~+/=\-]{8})(?=[\w.~+/=\-]*[0-9_.~+/=\-]|\w+[A-Z])"
            r"[\w.~+/=\-]+"
        ),
        r"\1" + _MASK,
        ("bearer", "basic"),
    ),
    # llmux keys keep their id (not secret: it names the key), never the secret part
    (re.compile(r"\b(sk-llmux-[0-9a-f]{12}_)[A-Za-z0-9_\-]+"), r"\1" + _MASK, ("sk-llmux-",)),
    (re.compile(r"\bsk-(?!llmux-[0-9a-f]{12}_\*)[A-Za-z0-9_\-]{12,}"), "sk-" + _MASK, ("sk-",)),
    (
        re.compile(r"\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
        "eyJ" + _MASK,
        ("eyj",),
    ),
    # name=value and "name": "value" pairs, as headers, query strings and JSON write them
    (
        re.compile(
            r"(authorization|x-api-key|api[_-]?key|access[_-]?token|client[_-]?secret"
            r"|password|secret)([\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)"
            r"(?!\*\*\*|(?:bearer|basic)\s)([^\s\"'\\,;&]+)",
            re.IGNORECASE,
        ),
        r"\1\2" + _MASK,
        _PAIR_NAMES,
    ),
)


def mask_secrets(text: str) -> str:
    """``text`` with credentials masked."""
    lower = text.lower()
    for pattern, replacement, words in _SECRETS:
        if any(w in lower for w in words):
            text = pattern.sub(replacement, text)
    return text


def install(*, bodies: bool | None = None) -> None:
    """Add ``request_id`` to every log record from now on (idempotent); with ``bodies``,
    turn the :data:`BODIES` loggers on (at debug level) or off."""
    if bodies is not None:
        logging.getLogger(BODIES).setLevel(logging.DEBUG if bodies else SILENT)
    current = logging.getLogRecordFactory()
    if getattr(current, "_llmux_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    factory._llmux_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    found = getattr(record, FIELDS, None)
    return found if isinstance(found, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


class TextFormatter(logging.Formatter):
    """:data:`LOG_FORMAT`, then the record's fields as ``key=value`` (unset ones left
    out), with secrets masked."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if extra:
            pairs = " ".join(f"{k}={_text(v)}" for k, v in extra.items() if v not in (None, ""))
            head, sep, tail = line.partition("\n")  # a traceback stays below the line
            line = f"{head} {pairs}{sep}{tail}"
        return mask_secrets(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``timestamp`` (UTC, ISO 8601 with
    microseconds), ``level``, ``logger``, ``message``, ``request_id``, the record's
    fields, and ``exception`` / ``stack`` when it has them. Every string is masked."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
        out: dict[str, Any] = {
            "timestamp": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in fields_of(record).items():
            if key not in out or key == "request_id":
                out[key] = mask_secrets(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exception"] = mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = mask_secrets(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def plain_stderr() -> bool:
    """Whether raw text on stderr fits the log (llama.cpp prints its own debug lines
    there): not while the root logger writes JSON."""
    return not any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def level_number(level: str) -> int:
    """``debug``/``info``/``warning``/``error``/``critical`` -> the logging level."""
    found = logging.getLevelNamesMapping().get(level.strip().upper())
    if found is None:
        raise ValueError(
            f"unknown log level {level!r}: use debug, info, warning, error or critical"
        )
    return found


def configure(
    level: str, fmt: LogFormat = "text", *, bodies: bool = False, stream: TextIO | None = None
) -> logging.Handler:
    """Log to ``stream`` (stderr) in ``fmt``: llmux and uvicorn at ``level``, other
    libraries at ``info`` or above (``--log-level debug`` is llmux's debug, not every
    dependency's). Returns the handler."""
    number = level_number(level)
    install(bodies=bodies)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=max(number, logging.INFO), handlers=[handler], force=True)
    for name in ("llmux", "uvicorn"):
        logging.getLogger(name).setLevel(number)
    return handler
