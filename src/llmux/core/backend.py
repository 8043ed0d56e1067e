"""The one seam every model server implements: the embedded engine, an upstream pool,
and the fake backend tests use.

The gateway picks one backend per request (``Gateway.route``) and calls it with the
request's context. Errors before the first chunk are raised as :mod:`llmux.errors`
exceptions; a stream that fails later raises from inside the iteration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.context import RequestContext
from llmux.core.models import LoadedInfo, ModelCard, ModelInfo
from llmux.core.request import ChatRequest, EmbedRequest, LoadOptions


class Backend(Protocol):
    name: str

    def has(self, model: str) -> bool:
        """Whether this backend serves ``model`` (a resolved display name)."""
        ...

    def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream chunks; the last has ``done=True`` and metrics."""
        ...

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult: ...

    def models(self) -> list[ModelInfo]: ...

    async def show(self, model: str, verbose: bool = False) -> ModelCard: ...

    async def load(self, model: str, keep_alive: float | None, load: LoadOptions) -> int:
        """Load ``model`` now; the nanoseconds it took (0 if it was loaded)."""
        ...

    async def unload(self, model: str) -> None: ...

    def loaded(self) -> list[LoadedInfo]: ...

    async def start(self) -> None:
        """Background work (keep-alive expiry, say); called once before serving."""
        ...

    async def aclose(self) -> None: ...
