"""Typed answers. Each is a pydantic model that also reads like a dict
(``resp.message.content`` or ``resp["message"]["content"]``); unknown fields are kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """A model that allows ``obj["field"]``, ``"field" in obj`` and ``obj.get("field")``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    def __getitem__(self, key: str) -> Any:
        if key in self:
            return getattr(self, key)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in type(self).model_fields:
            return getattr(self, key) is not None
        return key in (self.model_extra or {})

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self else default

    def keys(self) -> Iterator[str]:
        return (k for k in self.model_dump(exclude_none=True))


class ToolFunction(Record):
    name: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class ToolCall(Record):
    id: str | None = None
    function: ToolFunction


class Message(Record):
    role: str = "assistant"
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class Metrics(Record):
    """The timing and token counts of a final chunk (durations in nanoseconds)."""

    model: str = ""
    created_at: str | None = None
    done: bool = False
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(Metrics):
    message: Message = Field(default_factory=Message)
    logprobs: list[dict[str, Any]] | None = None
    # set by the conversations API on its final chunk
    conversation_id: str | None = None
    message_id: int | None = None


class GenerateResponse(Metrics):
    response: str = ""
    thinking: str | None = None
    context: list[int] | None = None
    logprobs: list[dict[str, Any]] | None = None


class EmbedResponse(Record):
    model: str = ""
    embeddings: list[list[float]] = Field(default_factory=list)
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class ModelDetails(Record):
    parent_model: str | None = None
    format: str | None = None
    family: str | None = None
    families: list[str] | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class ModelEntry(Record):
    """One installed model (``list``)."""

    name: str = ""
    model: str = ""
    modified_at: datetime | None = None
    size: int = 0
    digest: str = ""
    details: ModelDetails = Field(default_factory=ModelDetails)


class ListResponse(Record):
    models: list[ModelEntry] = Field(default_factory=list)


class RunningModel(Record):
    """One loaded model (``ps``)."""

    name: str = ""
    model: str = ""
    size: int = 0
    digest: str = ""
    details: ModelDetails = Field(default_factory=ModelDetails)
    expires_at: datetime | None = None
    size_vram: int | None = None
    context_length: int | None = None


class ProcessResponse(Record):
    models: list[RunningModel] = Field(default_factory=list)


class ShowResponse(Record):
    modelfile: str | None = None
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    license: str | None = None
    details: ModelDetails = Field(default_factory=ModelDetails)
    model_info: dict[str, Any] | None = None
    capabilities: list[str] | None = None
    modified_at: datetime | None = None


class ProgressResponse(Record):
    """A progress line of ``pull``, ``push`` or ``create``."""

    status: str | None = None
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class StatusResponse(Record):
    status: str | None = None


class Conversation(Record):
    id: str
    title: str = ""
    model: str | None = None
    system: str | None = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    message_count: int = 0
    snippet: str | None = Field(None, description="the match, when listed with a search")


class StoredMessage(Record):
    """A message kept in a conversation."""

    id: int | None = None
    role: str = ""
    content: str = ""
    thinking: str | None = ""
    model: str | None = None
    created_at: datetime | None = None
    partial: bool = False
    done_reason: str | None = None


class ConversationDetail(Conversation):
    messages: list[StoredMessage] = Field(default_factory=list)


# the Batch API (docs/batch.md): files and batches, in OpenAI's shapes

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


class FileObject(Record):
    """An uploaded file, or one llmux wrote (purpose ``batch_output``)."""

    id: str
    object: str = "file"
    bytes: int = 0
    created_at: int | None = None
    filename: str = ""
    purpose: str = ""
    status: str | None = None


class FileList(Record):
    """One page of files, newest first unless asked otherwise."""

    object: str = "list"
    data: list[FileObject] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(Record):
    id: str
    object: str = "file"
    deleted: bool = False


class BatchError(Record):
    """Why a batch failed validation; ``line`` is the input file's line (from 1)."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(Record):
    object: str = "list"
    data: list[BatchError] = Field(default_factory=list)


class BatchRequestCounts(Record):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchUsage(Record):
    """Tokens the batch's requests used so far."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class Batch(Record):
    """A batch: its status, counts, files and timestamps (unix seconds or ``None``)."""

    id: str
    object: str = "batch"
    endpoint: str = ""
    errors: BatchErrors | None = None
    input_file_id: str = ""
    completion_window: str = "24h"
    status: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    metadata: dict[str, str] | None = None
    usage: BatchUsage | None = None

    @property
    def done(self) -> bool:
        """Whether the status is terminal: completed, failed, expired or cancelled."""
        return self.status in TERMINAL_STATUSES


class BatchList(Record):
    """One page of batches, newest first."""

    object: str = "list"
    data: list[Batch] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
