"""What each SDK method sends and how its answer is read, shared by both clients.

A builder returns a :class:`Call`: method, path, body, whether the answer streams, and
the function that turns one JSON object of the answer into a typed response. The sync
and async clients only carry calls out.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypedDict, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from llmux.client.types import (
    ChatResponse,
    Conversation,
    ConversationDetail,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    ProcessResponse,
    ProgressResponse,
    ShowResponse,
    StatusResponse,
)

T = TypeVar("T")

KeepAlive = float | str | None
Think = bool | Literal["low", "medium", "high", "max"] | None
Format = Literal["", "json"] | Mapping[str, Any] | None
Image = str | bytes | Path
MessageLike = Mapping[str, Any] | BaseModel
ExportFormat = Literal["markdown", "json"]


class GenerationParams(TypedDict, total=False):
    """Keyword arguments every generating call accepts."""

    options: Mapping[str, Any] | None
    format: Format
    keep_alive: KeepAlive
    think: Think


class ChatParams(GenerationParams, total=False):
    tools: Sequence[Mapping[str, Any]] | None
    logprobs: bool | None
    top_logprobs: int | None


class GenerateParams(GenerationParams, total=False):
    suffix: str | None
    system: str | None
    template: str | None
    context: Sequence[int] | None
    raw: bool | None
    images: Sequence[Image] | None
    logprobs: bool | None
    top_logprobs: int | None


class EmbedParams(TypedDict, total=False):
    truncate: bool | None
    dimensions: int | None
    options: Mapping[str, Any] | None
    keep_alive: KeepAlive


class CreateParams(TypedDict, total=False):
    from_: str | None
    files: Mapping[str, str] | None
    adapters: Mapping[str, str] | None
    template: str | None
    license: str | Sequence[str] | None
    system: str | None
    parameters: Mapping[str, Any] | None
    messages: Sequence[MessageLike] | None
    quantize: str | None


class SendParams(GenerationParams, total=False):
    """``conversations.send``/``regenerate`` keyword arguments."""

    model: str | None
    images: Sequence[Image] | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    stream: bool = False
    text: bool = False  # the answer is a document, handed back as ``str``
    files: Mapping[str, Any] | None = None  # a multipart upload (with ``data`` fields)
    data: Mapping[str, str] | None = None


def _model(cls: type[T]) -> Callable[[Any], T]:
    validate: Callable[[Any], T] = cls.model_validate  # type: ignore[attr-defined]
    return lambda obj: validate(obj or {})


def _success(_: Any) -> StatusResponse:
    return StatusResponse(status="success")


def _nothing(_: Any) -> None:
    return None


def _text(obj: Any) -> str:
    return str(obj)


def _conversations(obj: Any) -> list[Conversation]:
    return [Conversation.model_validate(c) for c in (obj or {}).get("conversations", [])]


def encode_image(image: Image) -> str:
    """Base64 for the wire: bytes are encoded, a ``Path`` is read; a ``str`` is taken as
    base64 already (a ``data:`` URI prefix is dropped)."""
    if isinstance(image, Path):
        image = image.read_bytes()
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    return image.split(",", 1)[1] if image.startswith("data:") else image


def _message(message: MessageLike) -> dict[str, Any]:
    data = (
        message.model_dump(exclude_none=True) if isinstance(message, BaseModel) else dict(message)
    )
    if data.get("images"):
        data["images"] = [encode_image(i) for i in data["images"]]
    return data


def _body(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left unset."""
    body: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if key == "images":
            value = [encode_image(i) for i in value]
        elif key == "messages":
            value = [_message(m) for m in value]
        body[key.rstrip("_")] = dict(value) if isinstance(value, Mapping) else value
    return body


def chat(
    model: str, messages: Sequence[MessageLike] | None, stream: bool, params: ChatParams
) -> Call[ChatResponse]:
    body = _body(model=model, messages=messages or [], stream=stream, **params)
    return Call("POST", "/api/chat", _model(ChatResponse), body, stream=stream)


def generate(
    model: str, prompt: str | None, stream: bool, params: GenerateParams
) -> Call[GenerateResponse]:
    body = _body(model=model, prompt=prompt, stream=stream, **params)
    return Call("POST", "/api/generate", _model(GenerateResponse), body, stream=stream)


def embed(model: str, input: str | Sequence[str], params: EmbedParams) -> Call[EmbedResponse]:
    body = _body(model=model, input=input if isinstance(input, str) else list(input), **params)
    return Call("POST", "/api/embed", _model(EmbedResponse), body)


def list_models() -> Call[ListResponse]:
    return Call("GET", "/api/tags", _model(ListResponse))


def show(model: str, verbose: bool) -> Call[ShowResponse]:
    body = _body(model=model, verbose=verbose or None)
    return Call("POST", "/api/show", _model(ShowResponse), body)


def ps() -> Call[ProcessResponse]:
    return Call("GET", "/api/ps", _model(ProcessResponse))


def version() -> Call[str]:
    """llmux's own version (``llmux_version``); an Ollama server's ``version``."""
    return Call(
        "GET",
        "/api/version",
        lambda obj: str((obj or {}).get("llmux_version") or (obj or {}).get("version", "")),
    )


def progress(path: str, model: str, stream: bool, **fields: Any) -> Call[ProgressResponse]:
    """``pull``, ``push`` and ``create``: a stream of progress lines, or the last one."""
    body = _body(model=model, stream=stream, **fields)
    return Call("POST", path, _model(ProgressResponse), body, stream=stream)


def copy(source: str, destination: str) -> Call[StatusResponse]:
    return Call("POST", "/api/copy", _success, {"source": source, "destination": destination})


def delete(model: str) -> Call[StatusResponse]:
    return Call("DELETE", "/api/delete", _success, {"model": model})


# conversations (docs/conversations.md)

CONVERSATIONS = "/api/conversations"


def _one(id: str, tail: str = "") -> str:
    if not id:
        raise ValueError("a conversation id is required; `llmux conversations list` shows them")
    return f"{CONVERSATIONS}/{quote(id, safe='')}{tail}"


def conversation_create(
    title: str | None, model: str | None, system: str | None
) -> Call[Conversation]:
    body = _body(title=title, model=model, system=system)
    return Call("POST", CONVERSATIONS, _model(Conversation), body)


def conversation_list(
    q: str | None, limit: int | None, offset: int | None
) -> Call[list[Conversation]]:
    params = _body(q=q or None, limit=limit, offset=offset)
    return Call("GET", CONVERSATIONS, _conversations, params=params)


def conversation_get(id: str) -> Call[ConversationDetail]:
    return Call("GET", _one(id), _model(ConversationDetail))


def conversation_update(
    id: str, title: str | None, model: str | None, system: str | None
) -> Call[Conversation]:
    body = _body(title=title, model=model, system=system)
    return Call("PATCH", _one(id), _model(Conversation), body)


def conversation_delete(id: str) -> Call[None]:
    return Call("DELETE", _one(id), _nothing)


def conversation_send(
    id: str, content: str, stream: bool, params: SendParams
) -> Call[ChatResponse]:
    body = _body(content=content, stream=stream, **params)
    return Call("POST", _one(id, "/messages"), _model(ChatResponse), body, stream=stream)


def conversation_regenerate(id: str, stream: bool, params: SendParams) -> Call[ChatResponse]:
    body = _body(stream=stream, **params)
    path = _one(id, "/regenerate")
    return Call("POST", path, _model(ChatResponse), body, stream=stream)


def conversation_export(id: str, format: ExportFormat) -> Call[str]:
    if format not in ("markdown", "json"):
        raise ValueError(f"export format {format!r}: use 'markdown' or 'json'")
    return Call("GET", _one(id, "/export"), _text, params={"format": format}, text=True)
