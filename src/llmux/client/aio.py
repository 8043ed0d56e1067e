"""The asyncio client: :class:`AsyncClient`, its :class:`AsyncStream` and conversations.

The twin of ``sync.py``: the same calls (``calls.py``), answers (``base.py``) and retry
decisions (``resilience.py``); only the waiting differs."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack, overload

import httpx

from llmux.client import calls
from llmux.client import types as t
from llmux.client.base import ClientBase, finish, parse_line
from llmux.client.batch_aio import AsyncBatches, AsyncFiles
from llmux.client.errors import transport_error

T = TypeVar("T")


class AsyncStream(Generic[T]):
    """The typed chunks of a streamed answer. Iterate it with ``async for``;
    ``await aclose()`` (or leaving an ``async with`` block) hangs up, which stops
    generation on the server. An ``{"error": ...}`` line raises
    :class:`~llmux.client.ResponseError`."""

    def __init__(self, call: calls.Call[T], response: httpx.Response, base_url: str) -> None:
        self._call, self._response, self._base_url = call, response, base_url
        self._lines = response.aiter_lines()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self.closed:
            raise StopAsyncIteration
        try:
            while True:
                item = parse_line(self._call, await anext(self._lines))
                if item is not None:
                    return item
        except httpx.TransportError as exc:
            await self.aclose()
            raise transport_error(exc, self._base_url) from exc
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        self.closed = True
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient(ClientBase):
    """An asyncio client for llmux (and Ollama-compatible servers); see ``docs/sdk.md``."""

    _http: httpx.AsyncClient
    conversations: AsyncConversations
    files: AsyncFiles
    batches: AsyncBatches

    def _setup(self, httpx_options: dict[str, Any]) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout, **httpx_options)
        self.conversations = AsyncConversations(self)
        self.files = AsyncFiles(self)
        self.batches = AsyncBatches(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _open(self, call: calls.Call[Any]) -> httpx.Response:
        request, attempts = self._build(call), self._attempts()
        while True:
            attempts.admit()
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                await asyncio.sleep(attempts.failed(exc))
                continue
            delay = attempts.answered(response)
            if delay is None:
                return response
            await response.aclose()
            await asyncio.sleep(delay)

    async def _run(self, call: calls.Call[T]) -> T | AsyncStream[T]:
        response = await self._open(call)
        if call.stream and response.status_code < 400:
            return AsyncStream(call, response, self.base_url)
        try:
            await response.aread()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url) from exc
        finally:
            await response.aclose()
        return finish(call, response)

    async def _one(self, call: calls.Call[T]) -> T:
        result = await self._run(call)
        assert not isinstance(result, AsyncStream)
        return result

    @overload
    async def chat(
        self,
        model: str = "",
        messages: Sequence[calls.MessageLike] | None = None,
        *,
        stream: Literal[False] = False,
        **params: Unpack[calls.ChatParams],
    ) -> t.ChatResponse: ...
    @overload
    async def chat(
        self,
        model: str = "",
        messages: Sequence[calls.MessageLike] | None = None,
        *,
        stream: Literal[True],
        **params: Unpack[calls.ChatParams],
    ) -> AsyncStream[t.ChatResponse]: ...
    async def chat(
        self,
        model: str = "",
        messages: Sequence[calls.MessageLike] | None = None,
        *,
        stream: bool = False,
        **params: Unpack[calls.ChatParams],
    ) -> t.ChatResponse | AsyncStream[t.ChatResponse]:
        """Answer ``messages`` (``/api/chat``)."""
        return await self._run(calls.chat(model, messages, stream, params))

    @overload
    async def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        stream: Literal[False] = False,
        **params: Unpack[calls.GenerateParams],
    ) -> t.GenerateResponse: ...
    @overload
    async def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        stream: Literal[True],
        **params: Unpack[calls.GenerateParams],
    ) -> AsyncStream[t.GenerateResponse]: ...
    async def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        stream: bool = False,
        **params: Unpack[calls.GenerateParams],
    ) -> t.GenerateResponse | AsyncStream[t.GenerateResponse]:
        """Complete ``prompt`` (``/api/generate``)."""
        return await self._run(calls.generate(model, prompt, stream, params))

    async def embed(
        self, model: str = "", input: str | Sequence[str] = "", **params: Unpack[calls.EmbedParams]
    ) -> t.EmbedResponse:
        """Embeddings of one text or several (``/api/embed``)."""
        return await self._one(calls.embed(model, input, params))

    async def list(self) -> t.ListResponse:
        """The installed models."""
        return await self._one(calls.list_models())

    async def show(self, model: str, verbose: bool = False) -> t.ShowResponse:
        """A model's details, template, parameters and capabilities."""
        return await self._one(calls.show(model, verbose))

    async def ps(self) -> t.ProcessResponse:
        """The models loaded in memory."""
        return await self._one(calls.ps())

    async def version(self) -> str:
        """The server's version."""
        return await self._one(calls.version())

    @overload
    async def pull(
        self, model: str, *, insecure: bool = False, stream: Literal[False] = False
    ) -> t.ProgressResponse: ...
    @overload
    async def pull(
        self, model: str, *, insecure: bool = False, stream: Literal[True]
    ) -> AsyncStream[t.ProgressResponse]: ...
    async def pull(
        self, model: str, *, insecure: bool = False, stream: bool = False
    ) -> t.ProgressResponse | AsyncStream[t.ProgressResponse]:
        """Download a model from its registry."""
        return await self._run(
            calls.progress("/api/pull", model, stream, insecure=insecure or None)
        )

    @overload
    async def push(
        self, model: str, *, insecure: bool = False, stream: Literal[False] = False
    ) -> t.ProgressResponse: ...
    @overload
    async def push(
        self, model: str, *, insecure: bool = False, stream: Literal[True]
    ) -> AsyncStream[t.ProgressResponse]: ...
    async def push(
        self, model: str, *, insecure: bool = False, stream: bool = False
    ) -> t.ProgressResponse | AsyncStream[t.ProgressResponse]:
        """Upload a model to its registry."""
        return await self._run(
            calls.progress("/api/push", model, stream, insecure=insecure or None)
        )

    @overload
    async def create(
        self, model: str, *, stream: Literal[False] = False, **params: Unpack[calls.CreateParams]
    ) -> t.ProgressResponse: ...
    @overload
    async def create(
        self, model: str, *, stream: Literal[True], **params: Unpack[calls.CreateParams]
    ) -> AsyncStream[t.ProgressResponse]: ...
    async def create(
        self, model: str, *, stream: bool = False, **params: Unpack[calls.CreateParams]
    ) -> t.ProgressResponse | AsyncStream[t.ProgressResponse]:
        """Create a model from another (``from_=``) or from uploaded files."""
        return await self._run(calls.progress("/api/create", model, stream, **params))

    async def copy(self, source: str, destination: str) -> t.StatusResponse:
        """Copy a model under a new name."""
        return await self._one(calls.copy(source, destination))

    async def delete(self, model: str) -> t.StatusResponse:
        """Delete a model."""
        return await self._one(calls.delete(model))


class AsyncConversations:
    """``client.conversations``: chat histories kept by the server (docs/conversations.md)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, *, title: str | None = None, model: str | None = None, system: str | None = None
    ) -> t.Conversation:
        return await self._client._one(calls.conversation_create(title, model, system))

    async def list(
        self, q: str | None = None, *, limit: int | None = None, offset: int | None = None
    ) -> builtins.list[t.Conversation]:
        """Newest first; ``q`` searches titles and messages."""
        return await self._client._one(calls.conversation_list(q, limit, offset))

    async def get(self, id: str) -> t.ConversationDetail:
        """A conversation with its messages."""
        return await self._client._one(calls.conversation_get(id))

    async def update(
        self,
        id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> t.Conversation:
        return await self._client._one(calls.conversation_update(id, title, model, system))

    async def delete(self, id: str) -> None:
        await self._client._one(calls.conversation_delete(id))

    @overload
    async def send(
        self,
        id: str,
        content: str,
        *,
        stream: Literal[False] = False,
        **params: Unpack[calls.SendParams],
    ) -> t.ChatResponse: ...
    @overload
    async def send(
        self, id: str, content: str, *, stream: Literal[True], **params: Unpack[calls.SendParams]
    ) -> AsyncStream[t.ChatResponse]: ...
    async def send(
        self, id: str, content: str, *, stream: bool = False, **params: Unpack[calls.SendParams]
    ) -> t.ChatResponse | AsyncStream[t.ChatResponse]:
        """Add a user message and answer it with the whole history."""
        return await self._client._run(calls.conversation_send(id, content, stream, params))

    @overload
    async def regenerate(
        self, id: str, *, stream: Literal[False] = False, **params: Unpack[calls.SendParams]
    ) -> t.ChatResponse: ...
    @overload
    async def regenerate(
        self, id: str, *, stream: Literal[True], **params: Unpack[calls.SendParams]
    ) -> AsyncStream[t.ChatResponse]: ...
    async def regenerate(
        self, id: str, *, stream: bool = False, **params: Unpack[calls.SendParams]
    ) -> t.ChatResponse | AsyncStream[t.ChatResponse]:
        """Drop the last reply and answer the last user message again."""
        return await self._client._run(calls.conversation_regenerate(id, stream, params))

    async def export(self, id: str, format: calls.ExportFormat = "markdown") -> str:
        """The conversation as a Markdown document or as JSON text."""
        return await self._client._one(calls.conversation_export(id, format))
