"""The Python SDK: :class:`Client` and :class:`AsyncClient` for llmux's native API.

Shaped like the official ``ollama`` client (``chat``, ``generate``, ``embed``, ``list``,
``show``, ``ps``, ``pull``, ``push``, ``create``, ``copy``, ``delete``, ``version``) plus
``client.conversations`` for server-kept chat histories and ``client.files`` and
``client.batches`` for the Batch API. See ``docs/sdk.md`` and ``docs/batch.md``.
"""

from llmux.client.aio import AsyncClient, AsyncConversations, AsyncStream
from llmux.client.batch_aio import AsyncBatches, AsyncFiles
from llmux.client.batch_sync import Batches, Files
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
    TERMINAL_STATUSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchList,
    BatchRequestCounts,
    BatchUsage,
    ChatResponse,
    Conversation,
    ConversationDetail,
    EmbedResponse,
    FileDeleted,
    FileList,
    FileObject,
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
    "TERMINAL_STATUSES",
    "AsyncBatches",
    "AsyncClient",
    "AsyncConversations",
    "AsyncFiles",
    "AsyncStream",
    "AuthenticationError",
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchList",
    "BatchRequestCounts",
    "BatchUsage",
    "Batches",
    "ChatResponse",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ClientError",
    "Conversation",
    "ConversationDetail",
    "Conversations",
    "EmbedResponse",
    "FileDeleted",
    "FileList",
    "FileObject",
    "Files",
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
