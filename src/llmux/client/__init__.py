"""The Python SDK: :class:`Client` and :class:`AsyncClient` for llmux's native API.

Shaped like the official ``ollama`` client (``chat``, ``generate``, ``embed``, ``list``,
``show``, ``ps``, ``pull``, ``push``, ``create``, ``copy``, ``delete``, ``version``) plus
``client.conversations`` for server-kept chat histories. See ``docs/sdk.md``.
"""

from llmux.client.aio import AsyncClient, AsyncConversations, AsyncStream
from llmux.client.errors import (
    AuthenticationError,
    CircuitOpenError,
    ClientError,
    RequestError,
    RequestTimeout,
    ResponseError,
    UnreachableError,
)
from llmux.client.resilience import CircuitBreaker, RetryPolicy
from llmux.client.sync import Client, Conversations, Stream
from llmux.client.types import (
    ChatResponse,
    Conversation,
    ConversationDetail,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    Message,
    ModelEntry,
    ProcessResponse,
    ProgressResponse,
    RunningModel,
    ShowResponse,
    StatusResponse,
    StoredMessage,
)

__all__ = [
    "AsyncClient",
    "AsyncConversations",
    "AsyncStream",
    "AuthenticationError",
    "ChatResponse",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ClientError",
    "Conversation",
    "ConversationDetail",
    "Conversations",
    "EmbedResponse",
    "GenerateResponse",
    "ListResponse",
    "Message",
    "ModelEntry",
    "ProcessResponse",
    "ProgressResponse",
    "RequestError",
    "RequestTimeout",
    "ResponseError",
    "RetryPolicy",
    "RunningModel",
    "ShowResponse",
    "StatusResponse",
    "StoredMessage",
    "Stream",
    "UnreachableError",
]
