"""A fake backend for fast in-process tests of routes, the gateway and policies.

:class:`FakeBackend` implements :class:`llmux.core.backend.Backend`. Queue replies with
:meth:`FakeBackend.reply` (pieces of text, an error before or after some pieces, a delay
per piece); with nothing queued it answers ``"Hello", " world"``. Every call is recorded
with its context, so a test can see what reached the backend and with which request id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmux.core.chunks import ChatChunk, EmbedResult, Metrics
from llmux.core.context import RequestContext
from llmux.core.models import LoadedInfo, ModelCard, ModelInfo
from llmux.core.request import ChatRequest, EmbedRequest, LoadOptions
from llmux.errors import ModelNotFound

log = logging.getLogger("tests.fake_backend")
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class FakeReply:
    pieces: tuple[str, ...] = ("Hello", " world")
    error: BaseException | None = None  # raised after ``error_after`` pieces
    error_after: int = 0
    delay_s: float = 0.0  # before each piece
    done_reason: str = "stop"


@dataclass
class Call:
    method: str
    ctx: RequestContext | None
    args: tuple[Any, ...] = ()


@dataclass
class FakeBackend:
    model_names: tuple[str, ...] = ("fake:latest",)
    name: str = "fake"
    calls: list[Call] = field(default_factory=list)
    replies: deque[FakeReply] = field(default_factory=deque)
    loaded_models: dict[str, float | None] = field(default_factory=dict)
    started: bool = False
    closed: bool = False

    def reply(self, *pieces: str, **options: Any) -> FakeReply:
        queued = FakeReply(pieces=pieces or FakeReply().pieces, **options)
        self.replies.append(queued)
        return queued

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def _known(self, model: str) -> None:
        if model not in self.model_names:
            raise ModelNotFound(model, hint="`llmux list` shows the installed models")

    # -- the Backend seam --------------------------------------------------------------

    def has(self, model: str) -> bool:
        return model in self.model_names

    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.calls.append(Call("chat", ctx, (request,)))
        self._known(request.model)
        log.info("fake backend serving %s", request.model)
        script = self.replies.popleft() if self.replies else FakeReply()
        prompt = sum(len(m.content.split()) for m in request.messages) + len(
            (request.prompt or "").split()
        )
        for index in range(request.n):
            for i, piece in enumerate(script.pieces):
                if script.error is not None and i == script.error_after:
                    raise script.error
                if script.delay_s:
                    await asyncio.sleep(script.delay_s)
                yield ChatChunk(content=piece, model=request.model, index=index)
            if script.error is not None and script.error_after >= len(script.pieces):
                raise script.error
            metrics = Metrics(
                prompt_tokens=prompt, cached_tokens=0, completion_tokens=len(script.pieces)
            )
            yield ChatChunk(
                done=True,
                done_reason=script.done_reason,  # type: ignore[arg-type]
                metrics=metrics,
                model=request.model,
                index=index,
            )

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        self.calls.append(Call("embed", ctx, (request,)))
        self._known(request.model)
        vectors = [[float(len(text)), 1.0, 0.0] for text in request.inputs]
        tokens = sum(len(t.split()) for t in request.inputs)
        return EmbedResult(request.model, vectors, tokens, 1000, 0)

    def models(self) -> list[ModelInfo]:
        self.calls.append(Call("models", None))
        return [
            ModelInfo(name=n, modified_at=CREATED, size=1234, digest="f" * 64)
            for n in self.model_names
        ]

    async def show(self, model: str, verbose: bool = False) -> ModelCard:
        self.calls.append(Call("show", None, (model, verbose)))
        self._known(model)
        return ModelCard(
            name=model, modified_at=CREATED, template="{{ .Prompt }}", capabilities=("completion",)
        )

    async def load(self, model: str, keep_alive: float | None, load: LoadOptions) -> int:
        self.calls.append(Call("load", None, (model, keep_alive)))
        self._known(model)
        self.loaded_models[model] = keep_alive
        return 1000

    async def unload(self, model: str) -> None:
        self.calls.append(Call("unload", None, (model,)))
        self._known(model)
        self.loaded_models.pop(model, None)

    def loaded(self) -> list[LoadedInfo]:
        return [LoadedInfo(m, 1234, "f" * 64, {}, None, 2048) for m in self.loaded_models]

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True
