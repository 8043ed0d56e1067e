"""Core requests -> the OpenAI API (DeepSeek cloud, vLLM, llama.cpp server, another
llmux), and its SSE replies -> core chunks.

Tool-call argument fragments are joined per choice and handed on whole when the choice
finishes, as Ollama's clients expect; ``reasoning_content`` (DeepSeek, vLLM) or
``reasoning`` and ``<think>`` text at the start of the content become core
``thinking``. Usage arrives in the last event (``stream_options.include_usage``), so
each choice's closing chunk is held until the stream ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from llmux.core.chunks import ChatChunk, DoneReason, EmbedResult
from llmux.core.request import ChatRequest, EmbedRequest, Message, ToolCall
from llmux.core.tools import new_call_id
from llmux.errors import InvalidRequest, UpstreamError
from llmux.upstream.ollama import options as ollama_options
from llmux.upstream.translate import Clock, ThinkText, data_uri, token_logprobs

log = logging.getLogger(__name__)
FINISH: dict[str, DoneReason] = {"length": "length", "content_filter": "content_filter"}
NATIVE_ONLY = (
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "num_keep",
    "num_ctx",
    "num_thread",
    "num_gpu",
)


def _message(m: Message, call_ids: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        parts += [{"type": "image_url", "image_url": {"url": data_uri(i)}} for i in m.images]
        out["content"] = parts
    else:
        out["content"] = m.content
    if m.tool_calls:
        calls = []
        for c in m.tool_calls:
            cid = c.id or new_call_id()
            call_ids.setdefault(c.name, cid)
            calls.append(
                {
                    "id": cid,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": json.dumps(c.arguments, ensure_ascii=False),
                    },
                }
            )
        out["tool_calls"] = calls
        if not m.content:
            out["content"] = None
    if m.role == "assistant" and m.thinking:
        out["reasoning_content"] = m.thinking  # DeepSeek needs it back on tool-call turns
    if m.role == "tool":
        cid = m.tool_call_id or call_ids.get(m.tool_name or "", "")
        if cid:
            out["tool_call_id"] = cid
        if m.tool_name:
            out["name"] = m.tool_name
    return out


def _format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if isinstance(fmt, str):
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt}}


def _tool_choice(choice: str | None) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _sampling(request: ChatRequest, body: dict[str, Any], send_options: bool) -> None:
    s = request.sampling
    for ours, theirs in (
        ("num_predict", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ):
        value = getattr(s, ours)
        if value is not None and not (ours == "num_predict" and value < 0):
            body[theirs] = value
    if s.stop:
        body["stop"] = list(s.stop)
    if send_options:
        native = {k: v for k, v in ollama_options(request).items() if k in NATIVE_ONLY}
        if native:
            body["options"] = native


def chat_request(
    request: ChatRequest, model: str, upstream: str, *, send_options: bool = False
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _sampling(request, body, send_options)
    if request.n > 1:
        body["n"] = request.n
    if request.logit_bias:
        body["logit_bias"] = {str(t): b for t, b in request.logit_bias}
    if request.top_logprobs is not None:
        body["logprobs"] = True
    if request.prompt is not None or request.context:
        if request.template is not None:
            raise InvalidRequest(
                f"template overrides need an Ollama-type upstream; '{upstream}' speaks OpenAI",
                param="template",
            )
        body["prompt"] = list(request.context) if request.context else request.prompt
        if request.suffix is not None:
            body["suffix"] = request.suffix
        if request.top_logprobs is not None:
            body["logprobs"] = request.top_logprobs
        return "/completions", body
    if request.top_logprobs:
        body["top_logprobs"] = request.top_logprobs
    call_ids: dict[str, str] = {}
    msgs = [_message(m, call_ids) for m in request.messages]
    if request.prefix is not None:
        msgs.append({"role": "assistant", "content": request.prefix, "prefix": True})
    body["messages"] = msgs
    if request.tools:
        body["tools"] = [t.as_openai() for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
    rf = _format(request.format)
    if rf is not None:
        body["response_format"] = rf
    if isinstance(request.think, bool):
        body["thinking"] = {"type": "enabled" if request.think else "disabled"}
    elif isinstance(request.think, str):
        body["reasoning_effort"] = request.think
    return "/chat/completions", body


@dataclass
class _Choice:
    think: ThinkText = field(default_factory=ThinkText)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None


def _fragment(acc: dict[int, dict[str, Any]], frag: dict[str, Any]) -> None:
    idx = int(frag.get("index", len(acc)))
    call = acc.setdefault(idx, {"id": "", "name": "", "arguments": ""})
    if frag.get("id"):
        call["id"] = frag["id"]
    fn = frag.get("function") or {}
    if fn.get("name"):
        call["name"] = fn["name"]
    args = fn.get("arguments")
    if isinstance(args, dict):
        call["arguments"] = json.dumps(args)
    elif args:
        call["arguments"] += args


def _whole_calls(acc: dict[int, dict[str, Any]]) -> tuple[ToolCall, ...]:
    out = []
    for i, idx in enumerate(sorted(acc)):
        c = acc[idx]
        try:
            args = json.loads(c["arguments"]) if c["arguments"].strip() else {}
        except ValueError:
            args = {"value": c["arguments"]}
        if not isinstance(args, dict):
            args = {"value": args}
        out.append(ToolCall(name=c["name"], arguments=args, id=c["id"] or new_call_id(), index=i))
    return tuple(out)


class Reader:
    """Folds OpenAI stream events into core chunks."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.clock = Clock()

    def event(self, obj: dict[str, Any]) -> list[ChatChunk]:
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise UpstreamError(f"upstream '{self.upstream}' failed: {msg}")
        if obj.get("usage"):
            self.usage = obj["usage"]
        out = []
        for ch in obj.get("choices") or ():
            index = int(ch.get("index", 0))
            st = self.choices.get(index)
            if st is None:
                st = self.choices[index] = _Choice()
            delta = ch.get("delta")
            if delta is None:  # legacy completions stream a ``text`` per choice
                delta = {"content": ch.get("text") or ""}
            text = delta.get("content") or ""
            reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            for frag in delta.get("tool_calls") or ():
                _fragment(st.calls, frag)
            thinking, content = st.think.feed(text)
            lp = ch.get("logprobs")
            logprobs = token_logprobs(lp.get("content")) if isinstance(lp, dict) else ()
            if content or reasoning or thinking or logprobs:
                self.clock.token()
                out.append(
                    ChatChunk(
                        content=content,
                        thinking=reasoning + thinking,
                        index=index,
                        logprobs=logprobs,
                    )
                )
            if ch.get("finish_reason"):
                st.finish = ch["finish_reason"]
        return out

    def finish(self) -> list[ChatChunk]:
        """The closing chunks, one per choice, once the stream has ended."""
        u = self.usage or {}
        details = u.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0)
        reasoning = int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        metrics = self.clock.metrics(
            int(u.get("prompt_tokens") or 0),
            cached,
            int(u.get("completion_tokens") or 0),
            reasoning,
        )
        out = []
        for n, index in enumerate(sorted(self.choices) or [0]):
            st = self.choices.get(index) or _Choice()
            thinking, content = st.think.flush()
            calls = _whole_calls(st.calls)
            if thinking or content or calls:
                out.append(
                    ChatChunk(content=content, thinking=thinking, tool_calls=calls, index=index)
                )
            out.append(
                ChatChunk(
                    done=True,
                    done_reason=FINISH.get(st.finish or "stop", "stop"),
                    metrics=metrics if n == 0 else None,
                    index=index,
                )
            )
        return out


async def chunks(resp: aiohttp.ClientResponse, upstream: str) -> AsyncIterator[ChatChunk]:
    reader = Reader(upstream)
    ended = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank lines, ``: keep-alive`` comments, event/id fields
        data = line[5:].strip()
        if data == b"[DONE]":
            ended = True
            break
        try:
            obj = json.loads(data)
        except ValueError:
            raise UpstreamError(
                f"upstream '{upstream}' sent an event that is not JSON: {data[:120]!r}"
            ) from None
        for chunk in reader.event(obj):
            yield chunk
    if not ended and not any(c.finish for c in reader.choices.values()):
        raise UpstreamError(f"upstream '{upstream}' ended the stream before it was done")
    for chunk in reader.finish():
        yield chunk


def embed_request(request: EmbedRequest, model: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": model, "input": list(request.inputs)}
    if request.dimensions:
        body["dimensions"] = request.dimensions
    return "/embeddings", body


def embed_result(obj: Any, model: str) -> EmbedResult:
    data = sorted(obj.get("data") or [], key=lambda d: d.get("index", 0))
    tokens = int((obj.get("usage") or {}).get("prompt_tokens") or 0)
    return EmbedResult(
        model=model,
        embeddings=[d["embedding"] for d in data],
        prompt_tokens=tokens,
        total_ns=0,
        load_ns=0,
    )


def model_names(obj: Any) -> dict[str, dict[str, Any]]:
    """``/models`` -> id -> its model object."""
    return {str(m["id"]): m for m in (obj or {}).get("data", []) if m.get("id")}
