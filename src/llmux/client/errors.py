"""The SDK's errors, and the one place where HTTP answers and transport failures
become them::

    ClientError
    ├── ResponseError (error, status_code)   the server answered with an error
    │   └── AuthenticationError              401: no valid API key or token
    └── RequestError                         no usable answer came back
        ├── UnreachableError                 could not connect (also a ``ConnectionError``)
        │   └── CircuitOpenError             failing fast after repeated failures
        └── RequestTimeout                   no answer in time (also a ``TimeoutError``)

Every message says what to try next.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class ClientError(Exception):
    """Base of every error the SDK raises."""


class ResponseError(ClientError):
    """The server answered with an error.

    ``error`` is the server's message; ``status_code`` is the HTTP status, or -1 when
    the error arrived as the last line of a stream that had already started.
    """

    def __init__(self, error: str, status_code: int = -1) -> None:
        super().__init__(error)
        self.error = error
        self.status_code = status_code

    def __str__(self) -> str:
        return self.error


class AuthenticationError(ResponseError):
    """401: the server wants a valid credential (``api_key``, or ``client_id`` and
    ``client_secret``); also raised when the token endpoint refuses the client."""


class RequestError(ClientError):
    """The request got no usable answer (connection refused, dropped or too slow)."""


class UnreachableError(RequestError, ConnectionError):
    """The server could not be reached."""


class CircuitOpenError(UnreachableError):
    """Recent requests failed in a row; the client fails fast until a cool-down ends."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class RequestTimeout(RequestError, TimeoutError):
    """The server did not answer within the configured timeout."""


def error_message(content: bytes, status_code: int, reason: str = "") -> str:
    """The message of an error body: ``{"error": "..."}`` (Ollama) or
    ``{"error": {"message": "..."}}`` (OpenAI); otherwise the text or the reason."""
    text = content.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text or reason or f"HTTP {status_code}"
    message = _message_of(body)
    return message if message is not None else text


def _message_of(body: Any) -> str | None:
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


def raise_for_status(response: httpx.Response) -> None:
    """Raise :class:`ResponseError` for a 4xx/5xx answer whose body has been read."""
    if response.status_code >= 400:
        kind = AuthenticationError if response.status_code == 401 else ResponseError
        raise kind(
            error_message(response.content, response.status_code, response.reason_phrase),
            response.status_code,
        )


def decode_json(response: httpx.Response) -> Any:
    """The JSON body of a successful answer (``None`` for an empty one)."""
    raise_for_status(response)
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ResponseError(
            f"the server at {response.url} answered with something other than JSON; "
            "is LLMUX_HOST pointing at an llmux or Ollama server?",
            response.status_code,
        ) from exc


def decode_line(line: str) -> dict[str, Any] | None:
    """One NDJSON line of a stream; a line with an ``error`` key raises."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ResponseError(f"malformed stream line from the server: {line[:200]!r}") from exc
    message = _message_of(obj)
    if message is not None:
        raise ResponseError(message)
    if not isinstance(obj, dict):
        raise ResponseError(f"unexpected stream line from the server: {line[:200]!r}")
    return obj


def transport_error(exc: httpx.TransportError, base_url: str) -> RequestError:
    """A failure below HTTP, as an SDK error that says what to do."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return UnreachableError(f"could not reach llmux at {base_url}; start it with `llmux serve`")
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(
            f"llmux at {base_url} did not answer in time ({type(exc).__name__}); "
            "raise the client's read_timeout or check the server's load with `llmux ps`"
        )
    return RequestError(
        f"the connection to llmux at {base_url} failed: {exc or type(exc).__name__}"
    )
