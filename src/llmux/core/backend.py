"""The one seam every token producer implements (embedded engine, upstream servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.request import ChatRequest, EmbedRequest


class Backend(Protocol):
    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream chunks; the last has ``done=True`` and metrics. Errors before the
        first chunk are raised as :mod:`llmux.errors` exceptions."""
        ...

    async def embed(self, request: EmbedRequest) -> EmbedResult: ...

    async def aclose(self) -> None: ...
