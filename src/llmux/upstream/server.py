"""One configured upstream server: its HTTP client, API dialect, breaker, load and
health, and the models it serves (configured, or discovered and refreshed)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest, EmbedRequest
from llmux.errors import Timeout, UpstreamError
from llmux.observability.stats import UpstreamStats
from llmux.upstream import ollama, openai
from llmux.upstream.breaker import CircuitBreaker
from llmux.upstream.http import AttemptFailed, UpstreamHttp
from llmux.upstream.settings import RetryRule, UpstreamSettings

log = logging.getLogger(__name__)


class Upstream:
    """A pool member that is a remote server (see :class:`llmux.upstream.pool.Pool`)."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.type = settings.type
        self.weight = settings.weight
        self.http = UpstreamHttp(settings)
        self.breaker: CircuitBreaker | None = CircuitBreaker(settings.breaker)
        self.retry: dict[str, RetryRule] = settings.retry
        self.timeout_s = settings.timeout_s
        self.first_byte_timeout_s: float | None = settings.first_byte_timeout_s
        self.outstanding = 0
        self.stats = UpstreamStats()  # read by the metrics registry
        self.healthy = True
        self.last_error: str | None = None
        self.last_check = 0.0
        self.static = settings.exposed
        self.discovered: dict[str, dict[str, Any]] = {}

    # -- models ---------------------------------------------------------------------

    def models(self) -> dict[str, str]:
        """Exposed name -> upstream name."""
        if self.static is not None:
            return self.static
        return {name: name for name in self.discovered}

    def entry(self, upstream_model: str) -> dict[str, Any]:
        """What discovery said about a model (Ollama tag entry / OpenAI model object)."""
        return self.discovered.get(upstream_model, {})

    async def refresh(self) -> None:
        """Discover models (when not configured) and check health in one request."""
        path = "/api/tags" if self.type == "ollama" else "/models"
        try:
            obj = await self.http.get_json(path, self.settings.connect_timeout_s + 5)
        except (aiohttp.ClientError, TimeoutError, UpstreamError, ValueError) as exc:
            self._health(False, str(exc) or type(exc).__name__)
            return
        self._health(True, None)
        names = ollama.model_names(obj) if self.type == "ollama" else openai.model_names(obj)
        if self.static is not None:
            wanted = set(self.static.values())
            names = {k: v for k, v in names.items() if k in wanted}
        self.discovered = names

    def _health(self, ok: bool, error: str | None) -> None:
        if ok != self.healthy:
            log.warning(
                "upstream %s is %s%s",
                self.name,
                "healthy" if ok else "unhealthy",
                f": {error}" if error else "",
            )
        self.healthy, self.last_error, self.last_check = ok, error, time.time()

    # -- serving --------------------------------------------------------------------

    def _chat_body(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        if self.type == "ollama":
            return ollama.chat_request(request, model, self.name)
        return openai.chat_request(
            request, model, self.name, send_options=self.settings.send_options
        )

    async def chat(
        self, ctx: RequestContext, request: ChatRequest, model: str, deadline: float
    ) -> AsyncIterator[ChatChunk]:
        path, body = self._chat_body(request, model)
        payload = json.dumps(body, ensure_ascii=False).encode()
        resp = await self.http.open(path, payload, model=model, deadline=deadline)
        dialect = ollama.chunks if self.type == "ollama" else openai.chunks
        try:
            with self._mid_reply():
                async for chunk in dialect(resp, self.name):
                    yield chunk
        finally:
            resp.release()

    async def relay(
        self, path: str, payload: bytes, model: str, deadline: float, meta: dict[str, str]
    ) -> AsyncIterator[bytes]:
        """The fast path: the reply's bytes as they arrive, unparsed. ``meta`` receives
        the reply's content type before the first bytes are yielded."""
        resp = await self.http.open(path, payload, model=model, deadline=deadline)
        meta["content_type"] = resp.headers.get("Content-Type", "application/json")
        chunked = "chunked" in resp.headers.get("Transfer-Encoding", "").lower()
        meta["delimited"] = "yes" if chunked or "Content-Length" in resp.headers else "no"
        try:
            with self._mid_reply():
                async for data in resp.content.iter_any():
                    yield data
        finally:
            resp.release()

    @contextlib.contextmanager
    def _mid_reply(self) -> Iterator[None]:
        """Errors while a reply is read, as llmux errors that name the upstream."""
        try:
            yield
        except TimeoutError:
            raise Timeout(
                f"upstream '{self.name}' ran past timeout_s={self.timeout_s:g};"
                " raise it in its [[upstreams]] table"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream '{self.name}' broke off the reply: {exc or type(exc).__name__}"
            ) from None

    async def embed(
        self, ctx: RequestContext, request: EmbedRequest, model: str, deadline: float
    ) -> EmbedResult:
        if self.type == "ollama":
            path, body = ollama.embed_request(request, model)
            obj = await self.http.post_json(path, body, model=model, deadline=deadline)
            return ollama.embed_result(obj, request.model)
        path, body = openai.embed_request(request, model)
        obj = await self.http.post_json(path, body, model=model, deadline=deadline)
        return openai.embed_result(obj, request.model)

    async def show(self, model: str) -> Any:
        """Ollama's ``/api/show`` for one model, proxied."""
        deadline = time.monotonic() + self.settings.connect_timeout_s + 10
        try:
            return await self.http.post_json(
                "/api/show", {"model": model}, model=model, deadline=deadline
            )
        except AttemptFailed as failed:
            raise failed.final or UpstreamError(failed.message) from None

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "url": self.settings.url,
            "weight": self.weight,
            "healthy": self.healthy,
            "last_error": self.last_error,
            "last_check": self.last_check or None,
            "outstanding": self.outstanding,
            "breaker": self.breaker.snapshot() if self.breaker else None,
            "models": self.models(),
        }

    async def aclose(self) -> None:
        await self.http.aclose()
