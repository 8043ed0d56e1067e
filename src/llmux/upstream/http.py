"""The HTTP client for one upstream: a pooled keep-alive aiohttp session, the base URL,
the bearer key, and one exception for every way an attempt can fail.

aiohttp was chosen by measurement (see docs/benchmarks.md): on two cores a shared
``httpx.AsyncClient`` fell far behind it at 32 concurrent streams.

:class:`AttemptFailed` describes a failure before any byte reached the client, so the
pool may retry or fail over; its ``kind`` says which retry rule applies.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Any, Literal

import aiohttp

from llmux import __version__
from llmux.errors import InvalidRequest, LlmuxError, ModelNotFound, PaymentRequired, UpstreamError
from llmux.upstream.settings import UpstreamSettings

log = logging.getLogger(__name__)
FailureKind = Literal["connect", "status", "timeout", "protocol"]
READ_BUFFER = 1 << 20  # longest line (one NDJSON object or SSE event) we accept


class AttemptFailed(Exception):
    """An attempt failed before its first chunk. ``final`` is the error for the client
    when no retry or failover should happen (a 4xx that another try would repeat)."""

    def __init__(
        self,
        upstream: str,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        final: LlmuxError | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.final = final

    @property
    def rule(self) -> str:
        """The retry rule that applies: the status code, or ``connect``/``504``."""
        if self.kind == "status" and self.status is not None:
            return str(self.status)
        return "504" if self.kind == "timeout" else "connect"

    @property
    def counts_against_breaker(self) -> bool:
        return self.final is None and self.status != 429


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: bytes) -> str:
    """The message of an error body in either API's shape, or its text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:300] or "no body"
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if err is not None:
        return str(err)
    return text[:300]


def status_failure(name: str, model: str, status: int, body: bytes, headers: Any) -> AttemptFailed:
    message = error_message(body)
    where = f"upstream '{name}' answered {status}: {message}"
    final: LlmuxError | None = None
    if status in (401, 403):
        final = UpstreamError(
            f"upstream '{name}' rejected llmux's credentials ({status}: {message});"
            " check api_key / api_key_env in its [[upstreams]] table"
        )
    elif status == 404:
        final = ModelNotFound(model, f"upstream '{name}' says: {message}")
    elif status == 402:  # DeepSeek's "Insufficient Balance": passed on as it came, never retried
        final = PaymentRequired(message)
    elif 400 <= status < 500 and status not in (408, 409, 429):
        final = InvalidRequest(where, status=status if status in (400, 413, 422) else 400)
    return AttemptFailed(
        name,
        "status",
        where,
        status=status,
        retry_after=parse_retry_after(headers),
        final=final,
    )


class UpstreamHttp:
    """One upstream's session (created lazily on the running loop) and base URL."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.name = settings.name
        base = settings.url
        if settings.type == "openai" and base.count("/") == 2:  # bare root: add /v1
            base += "/v1"
        self.base = base
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"llmux/{__version__}",
        }
        if settings.api_key is not None:
            self.headers["Authorization"] = "Bearer " + settings.api_key.get_secret_value()
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections,
                keepalive_timeout=60,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self.headers,
                read_bufsize=READ_BUFFER,
                auto_decompress=True,
            )
        return self._session

    def timeout(self, deadline: float) -> aiohttp.ClientTimeout:
        left = max(0.001, deadline - time.monotonic())
        connect = min(self.settings.connect_timeout_s, left)
        return aiohttp.ClientTimeout(total=left, sock_connect=connect)

    async def open(
        self, path: str, payload: bytes, *, model: str, deadline: float
    ) -> aiohttp.ClientResponse:
        """POST and return the response once its status is 2xx; any failure before
        that is an :class:`AttemptFailed`. The caller releases the response."""
        try:
            resp = await self.session().post(
                self.base + path, data=payload, timeout=self.timeout(deadline)
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            kind: FailureKind = (
                "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "timeout"
            )
            raise AttemptFailed(self.name, kind, f"upstream '{self.name}' timed out") from None
        except aiohttp.ClientError as exc:
            raise AttemptFailed(
                self.name, "connect", f"upstream '{self.name}' unreachable: {exc}"
            ) from None
        if resp.status >= 300:
            try:
                body = await resp.content.read(4096)
            except (aiohttp.ClientError, TimeoutError):
                body = b""
            finally:
                resp.release()
            raise status_failure(self.name, model, resp.status, body, resp.headers)
        return resp

    async def get_json(self, path: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        async with self.session().get(self.base + path, timeout=self.timeout(deadline)) as resp:
            if resp.status >= 300:
                body = await resp.read()
                raise UpstreamError(
                    f"upstream '{self.name}' GET {path} answered {resp.status}: {error_message(body)}"
                )
            return await resp.json(content_type=None)

    async def post_json(
        self, path: str, body: dict[str, Any], *, model: str, deadline: float
    ) -> Any:
        resp = await self.open(path, json.dumps(body).encode(), model=model, deadline=deadline)
        try:
            return await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"upstream '{self.name}' sent a bad reply: {exc}") from None
        finally:
            resp.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
