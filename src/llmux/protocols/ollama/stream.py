"""Core chunks -> Ollama's NDJSON objects (and the one object of ``stream: false``)."""

from __future__ import annotations

from typing import Any

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.request import ToolCall
from llmux.protocols.times import now_rfc3339


def _final_fields(chunk: ChatChunk) -> dict[str, Any]:
    out: dict[str, Any] = {"done_reason": chunk.done_reason or "stop"}
    m = chunk.metrics
    if m is not None:
        out.update(
            total_duration=m.total_ns,
            load_duration=m.load_ns,
            prompt_eval_count=m.prompt_eval_count,
            prompt_eval_duration=m.prompt_eval_ns,
            eval_count=m.completion_tokens,
            eval_duration=m.eval_ns,
        )
    return out


def tool_calls_object(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": c.index, "name": c.name, "arguments": c.arguments}} if c.id
        else {"function": {"index": c.index, "name": c.name, "arguments": c.arguments}}
        for c in calls
    ]  # fmt: skip


def chat_object(chunk: ChatChunk, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": chunk.content}
    if chunk.thinking:
        message["thinking"] = chunk.thinking
    if chunk.tool_calls:
        message["tool_calls"] = tool_calls_object(chunk.tool_calls)
    out: dict[str, Any] = {
        "model": model,
        "created_at": now_rfc3339(),
        "message": message,
        "done": chunk.done,
    }
    if chunk.logprobs:
        out["logprobs"] = [lp.as_dict() for lp in chunk.logprobs]
    if chunk.done:
        out.update(_final_fields(chunk))
    return out


def generate_object(chunk: ChatChunk, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339(), "response": chunk.content}
    if chunk.thinking:
        out["thinking"] = chunk.thinking
    if chunk.logprobs:
        out["logprobs"] = [lp.as_dict() for lp in chunk.logprobs]
    out["done"] = chunk.done
    if chunk.done:
        out.update(_final_fields(chunk))
        if chunk.context is not None:
            out["context"] = list(chunk.context)
    return out


def lifecycle_object(model: str, reason: str, *, chat: bool, load_ns: int = 0) -> dict[str, Any]:
    """The reply to a load (empty prompt) or unload (keep_alive 0) request."""
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason=reason)
    if load_ns:
        out["load_duration"] = load_ns
        out["total_duration"] = load_ns
    return out


def embed_object(result: EmbedResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "embeddings": result.embeddings,
        "total_duration": result.total_ns,
        "load_duration": result.load_ns,
        "prompt_eval_count": result.prompt_tokens,
    }
