"""The blocking client: :class:`Client`, its :class:`Stream` and conversations."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack, overload

import httpx

from llmux.client import calls
from llmux.client import types as t
from llmux.client.base import ClientBase, finish, parse_line
from llmux.client.batch_sync import Batches, Files
from llmux.client.errors import transport_error

T = TypeVar("T")


class Stream(Generic[T]):
    """The typed chunks of a streamed answer. Iterate it; ``close()`` (or leaving a
    ``with`` block) hangs up, which stops generation on the server. An
    ``{"error": ...}`` line raises :class:`~llmux.client.ResponseError`."""

    def __init__(self, call: calls.Call[T], response: httpx.Response, base_url: str) -> None:
        self._call, self._response, self._base_url = call, response, base_url
        self._lines = response.iter_lines()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self.closed:
            raise StopIteration
        try:
            while True:
                item = parse_line(self._call, next(self._lines))
                if item is not None:
                    return item
        except httpx.TransportError as exc:
            self.close()
            raise transport_error(exc, self._base_url) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.closed = True
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(ClientBase):
    """A blocking client for llmux (and Ollama-compatible servers); see ``docs/sdk.md``."""

    _http: httpx.Client
    conversations: Conversations
    files: Files
    batches: Batches

    def _setup(self, httpx_options: dict[str, Any]) -> None:
        self._http = httpx.Client(timeout=self.timeout, **httpx_options)
        self.conversations = Conversations(self)
        self.files = Files(self)
        self.batches = Batches(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open(self, call: calls.Call[Any]) -> httpx.Response:
        request, attempts = self._build(call), self._attempts()
        while True:
            attempts.admit()
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                time.sleep(attempts.failed(exc))
                continue
            delay = attempts.answered(response)
            if delay is None:
                return response
            response.close()
            time.sleep(delay)

    def _run(self, call: calls.Call[T]) -> T | Stream[T]:
        response = self._open(call)
        if call.stream and response.status_code < 400:
            return Stream(call, response, self.base_url)
        try:
            response.read()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url) from exc
        finally:
            response.close()
        return finish(call, response)

    def _one(self, call: calls.Call[T]) -> T:
        result = self._run(call)
        assert not isinstance(result, Stream)
        return result

    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[calls.MessageLike] | None = None,
        *,
        stream: Literal[False] = False,
        **params: Unpack[calls.ChatParams],
    ) -> t.ChatResponse: ...
    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[calls.MessageLike] | None = None,
        *,
        stream: Literal[True],
        **params: Unpack[calls.ChatParams],
    ) -> Stream[t.ChatResponse]: ...
    def chat(
        self,
        model: str = "",
        messages: Sequence[calls.MessageLike] | None = None,
        *,
        stream: bool = False,
        **params: Unpack[calls.ChatParams],
    ) -> t.ChatResponse | Stream[t.ChatResponse]:
        """Answer ``messages`` (``/api/chat``)."""
        return self._run(calls.chat(model, messages, stream, params))

    @overload
    def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        stream: Literal[False] = False,
        **params: Unpack[calls.GenerateParams],
    ) -> t.GenerateResponse: ...
    @overload
    def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        stream: Literal[True],
        **params: Unpack[calls.GenerateParams],
    ) -> Stream[t.GenerateResponse]: ...
    def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        stream: bool = False,
        **params: Unpack[calls.GenerateParams],
    ) -> t.GenerateResponse | Stream[t.GenerateResponse]:
        """Complete ``prompt`` (``/api/generate``)."""
        return self._run(calls.generate(model, prompt, stream, params))

    def embed(
        self, model: str = "", input: str | Sequence[str] = "", **params: Unpack[calls.EmbedParams]
    ) -> t.EmbedResponse:
        """Embeddings of one text or several (``/api/embed``)."""
        return self._one(calls.embed(model, input, params))

    def list(self) -> t.ListResponse:
        """The installed models."""
        return self._one(calls.list_models())

    def show(self, model: str, verbose: bool = False) -> t.ShowResponse:
        """A model's details, template, parameters and capabilities."""
        return self._one(calls.show(model, verbose))

    def ps(self) -> t.ProcessResponse:
        """The models loaded in memory."""
        return self._one(calls.ps())

    def version(self) -> str:
        """The server's version."""
        return self._one(calls.version())

    @overload
    def pull(
        self, model: str, *, insecure: bool = False, stream: Literal[False] = False
    ) -> t.ProgressResponse: ...
    @overload
    def pull(
        self, model: str, *, insecure: bool = False, stream: Literal[True]
    ) -> Stream[t.ProgressResponse]: ...
    def pull(
        self, model: str, *, insecure: bool = False, stream: bool = False
    ) -> t.ProgressResponse | Stream[t.ProgressResponse]:
        """Download a model from its registry."""
        return self._run(calls.progress("/api/pull", model, stream, insecure=insecure or None))

    @overload
    def push(
        self, model: str, *, insecure: bool = False, stream: Literal[False] = False
    ) -> t.ProgressResponse: ...
    @overload
    def push(
        self, model: str, *, insecure: bool = False, stream: Literal[True]
    ) -> Stream[t.ProgressResponse]: ...
    def push(
        self, model: str, *, insecure: bool = False, stream: bool = False
    ) -> t.ProgressResponse | Stream[t.ProgressResponse]:
        """Upload a model to its registry."""
        return self._run(calls.progress("/api/push", model, stream, insecure=insecure or None))

    @overload
    def create(
        self, model: str, *, stream: Literal[False] = False, **params: Unpack[calls.CreateParams]
    ) -> t.ProgressResponse: ...
    @overload
    def create(
        self, model: str, *, stream: Literal[True], **params: Unpack[calls.CreateParams]
    ) -> Stream[t.ProgressResponse]: ...
    def create(
        self, model: str, *, stream: bool = False, **params: Unpack[calls.CreateParams]
    ) -> t.ProgressResponse | Stream[t.ProgressResponse]:
        """Create a model from another (``from_=``) or from uploaded files."""
        return self._run(calls.progress("/api/create", model, stream, **params))

    def copy(self, source: str, destination: str) -> t.StatusResponse:
        """Copy a model under a new name."""
        return self._one(calls.copy(source, destination))

    def delete(self, model: str) -> t.StatusResponse:
        """Delete a model."""
        return self._one(calls.delete(model))


class Conversations:
    """``client.conversations``: chat histories kept by the server (docs/conversations.md)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, *, title: str | None = None, model: str | None = None, system: str | None = None
    ) -> t.Conversation:
        return self._client._one(calls.conversation_create(title, model, system))

    def list(
        self, q: str | None = None, *, limit: int | None = None, offset: int | None = None
    ) -> builtins.list[t.Conversation]:
        """Newest first; ``q`` searches titles and messages."""
        return self._client._one(calls.conversation_list(q, limit, offset))

    def get(self, id: str) -> t.ConversationDetail:
        """A conversation with its messages."""
        return self._client._one(calls.conversation_get(id))

    def update(
        self,
        id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> t.Conversation:
        return self._client._one(calls.conversation_update(id, title, model, system))

    def delete(self, id: str) -> None:
        self._client._one(calls.conversation_delete(id))

    @overload
    def send(
        self,
        id: str,
        content: str,
        *,
        stream: Literal[False] = False,
        **params: Unpack[calls.SendParams],
    ) -> t.ChatResponse: ...
    @overload
    def send(
        self, id: str, content: str, *, stream: Literal[True], **params: Unpack[calls.SendParams]
    ) -> Stream[t.ChatResponse]: ...
    def send(
        self, id: str, content: str, *, stream: bool = False, **params: Unpack[calls.SendParams]
    ) -> t.ChatResponse | Stream[t.ChatResponse]:
        """Add a user message and answer it with the whole history."""
        return self._client._run(calls.conversation_send(id, content, stream, params))

    @overload
    def regenerate(
        self, id: str, *, stream: Literal[False] = False, **params: Unpack[calls.SendParams]
    ) -> t.ChatResponse: ...
    @overload
    def regenerate(
        self, id: str, *, stream: Literal[True], **params: Unpack[calls.SendParams]
    ) -> Stream[t.ChatResponse]: ...
    def regenerate(
        self, id: str, *, stream: bool = False, **params: Unpack[calls.SendParams]
    ) -> t.ChatResponse | Stream[t.ChatResponse]:
        """Drop the last reply and answer the last user message again."""
        return self._client._run(calls.conversation_regenerate(id, stream, params))

    def export(self, id: str, format: calls.ExportFormat = "markdown") -> str:
        """The conversation as a Markdown document or as JSON text."""
        return self._client._one(calls.conversation_export(id, format))
