"""Core requests -> Ollama's native API, and its NDJSON replies -> core chunks.

Chat goes to ``/api/chat``; raw prompts, fill-in-the-middle, template overrides and
requests that want ``context`` back go to ``/api/generate``. Upstreams are always asked
to stream, so a non-streaming client reply is the same stream collected. Ollama's
``thinking`` maps onto core ``thinking``; ``<think>`` text at the start of the content
(older Ollama with DeepSeek-R1) is split into it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from llmux.core.chunks import ChatChunk, DoneReason, EmbedResult, Metrics
from llmux.core.request import ChatRequest, EmbedRequest, Message, ToolCall
from llmux.errors import InvalidRequest, UpstreamError
from llmux.protocols.ollama.convert import options_object
from llmux.protocols.ollama.stream import tool_calls_object
from llmux.upstream.translate import ThinkText, b64, token_logprobs

log = logging.getLogger(__name__)

DONE_REASONS: dict[str, DoneReason] = {
    "stop": "stop",
    "length": "length",
    "load": "load",
    "unload": "unload",
    "content_filter": "content_filter",
}


def options(request: ChatRequest | EmbedRequest) -> dict[str, Any]:
    sampling = request.sampling if isinstance(request, ChatRequest) else None
    return options_object(sampling, request.load)


def message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.thinking:
        out["thinking"] = m.thinking
    if m.images:
        out["images"] = [b64(i) for i in m.images]
    if m.tool_calls:
        out["tool_calls"] = tool_calls_object(m.tool_calls)
    if m.tool_name:
        out["tool_name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _common(request: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": True}
    opts = options(request)
    if opts:
        body["options"] = opts
    if request.format is not None:
        body["format"] = request.format
    if request.keep_alive is not None:
        body["keep_alive"] = -1 if request.keep_alive < 0 else request.keep_alive
    if request.think is not None:
        body["think"] = request.think
    if request.top_logprobs is not None:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    return body


def _generate_form(request: ChatRequest) -> bool:
    return (
        request.prompt is not None
        or request.template is not None
        or request.return_context
        or bool(request.context)
    )


def chat_request(request: ChatRequest, model: str, upstream: str) -> tuple[str, dict[str, Any]]:
    """The path and JSON body for one core request."""
    if request.n > 1:
        raise InvalidRequest(
            f"n > 1 is not supported by upstream '{upstream}' (Ollama API); send n requests",
            param="n",
        )
    if request.logit_bias:
        log.info("upstream %s: logit_bias is not supported by the Ollama API, ignored", upstream)
    body = _common(request, model)
    if not _generate_form(request):
        msgs = [message(m) for m in request.messages]
        if request.prefix is not None:
            msgs.append({"role": "assistant", "content": request.prefix})
        body["messages"] = msgs
        if request.tools and request.tool_choice != "none":
            body["tools"] = [t.as_openai() for t in request.tools]
        return "/api/chat", body
    if request.prompt is not None:
        body["prompt"] = request.prompt
        body["raw"] = request.suffix is None and request.template is None
    else:
        system = [m.content for m in request.messages if m.role == "system"]
        user = [m.content for m in request.messages if m.role != "system"]
        body["prompt"] = "\n".join(user)
        if system:
            body["system"] = "\n".join(system)
    if request.suffix is not None:
        body["suffix"] = request.suffix
    if request.template is not None:
        body["template"] = request.template
    if request.context:
        body["context"] = list(request.context)
    images = request.all_images
    if images:
        body["images"] = [b64(i) for i in images]
    return "/api/generate", body


def _metrics(obj: dict[str, Any]) -> Metrics:
    return Metrics(
        prompt_tokens=int(obj.get("prompt_eval_count") or 0),
        completion_tokens=int(obj.get("eval_count") or 0),
        total_ns=int(obj.get("total_duration") or 0),
        load_ns=int(obj.get("load_duration") or 0),
        prompt_eval_ns=int(obj.get("prompt_eval_duration") or 0),
        eval_ns=int(obj.get("eval_duration") or 0),
    )


def _calls(raw: Any) -> tuple[ToolCall, ...]:
    calls = []
    for i, c in enumerate(raw or ()):
        fn = c.get("function") or {}
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"value": args}
        calls.append(
            ToolCall(
                name=str(fn.get("name", "")),
                arguments=args,
                id=c.get("id") or "",
                index=int(fn.get("index", i)),
            )
        )
    return tuple(calls)


class Reader:
    """Folds NDJSON objects into core chunks."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.think = ThinkText()

    def chunks(self, obj: dict[str, Any]) -> list[ChatChunk]:
        """One object's chunks: a closing object that still carries output is split in
        two, so renderers see the output before the end."""
        chunk = self.chunk(obj)
        if chunk.done and (chunk.content or chunk.thinking or chunk.tool_calls or chunk.logprobs):
            body = ChatChunk(
                content=chunk.content,
                thinking=chunk.thinking,
                tool_calls=chunk.tool_calls,
                logprobs=chunk.logprobs,
            )
            end = ChatChunk(
                done=True,
                done_reason=chunk.done_reason,
                metrics=chunk.metrics,
                context=chunk.context,
            )
            return [body, end]
        return [chunk]

    def chunk(self, obj: dict[str, Any]) -> ChatChunk:
        if "error" in obj:
            raise UpstreamError(f"upstream '{self.upstream}' failed: {obj['error']}")
        msg = obj.get("message")
        if isinstance(msg, dict):
            text, thinking = msg.get("content") or "", msg.get("thinking") or ""
            calls = _calls(msg.get("tool_calls"))
        else:
            text, thinking, calls = obj.get("response") or "", obj.get("thinking") or "", ()
        split_thinking, content = self.think.feed(text)
        done = bool(obj.get("done"))
        if done:
            held_thinking, held = self.think.flush()
            split_thinking += held_thinking
            content += held
        ctx = obj.get("context")
        return ChatChunk(
            content=content,
            thinking=thinking + split_thinking,
            tool_calls=calls,
            done=done,
            done_reason=DONE_REASONS.get(obj.get("done_reason") or "stop", "stop")
            if done
            else None,
            metrics=_metrics(obj) if done else None,
            context=tuple(ctx) if done and isinstance(ctx, list) else None,
            logprobs=token_logprobs(obj.get("logprobs")),
        )


async def chunks(resp: aiohttp.ClientResponse, upstream: str) -> AsyncIterator[ChatChunk]:
    reader = Reader(upstream)
    async for line in resp.content:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise UpstreamError(
                f"upstream '{upstream}' sent a line that is not JSON: {line[:120]!r}"
            ) from None
        for chunk in reader.chunks(obj):
            yield chunk
            if chunk.done:
                return
    raise UpstreamError(f"upstream '{upstream}' ended the stream before it was done")


def embed_request(request: EmbedRequest, model: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": model,
        "input": list(request.inputs),
        "truncate": request.truncate,
    }
    if request.dimensions:
        body["dimensions"] = request.dimensions
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    opts = options(request)
    if opts:
        body["options"] = opts
    return "/api/embed", body


def embed_result(obj: Any, model: str) -> EmbedResult:
    return EmbedResult(
        model=model,
        embeddings=list(obj.get("embeddings") or []),
        prompt_tokens=int(obj.get("prompt_eval_count") or 0),
        total_ns=int(obj.get("total_duration") or 0),
        load_ns=int(obj.get("load_duration") or 0),
    )


def model_names(obj: Any) -> dict[str, dict[str, Any]]:
    """``/api/tags`` -> name -> its tag entry."""
    return {str(m.get("name") or m.get("model")): m for m in (obj or {}).get("models", [])}
