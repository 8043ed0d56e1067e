"""What a request may use, before it runs: its prompt tokens and its output cap.

* **Local models: exact.** The engine renders the prompt with the model's template and
  counts it with the model's own tokenizer (:meth:`LocalEngine.count_prompt`); while
  the model is not loaded yet, the rendered prompt's UTF-8 length stands in, which is
  never less than its token count (every token covers at least one byte).
* **Upstream models: an upper bound.** The UTF-8 length of every text the request
  sends (message contents, reasoning, tool calls and tool definitions, the prompt and
  suffix), plus :data:`MESSAGE_OVERHEAD` tokens per message for the template's role
  markers and :data:`IMAGE_TOKENS` per image. On the relay fast path, where the body
  is not parsed, the body's own length is the bound.
* **Output cap**: ``max_tokens`` / ``num_predict`` when the request sets one, else
  ``[limits] default_output_tokens``; once per choice (``n``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from llmux.core.request import ChatRequest, EmbedRequest, Message

MESSAGE_OVERHEAD = 8
IMAGE_TOKENS = 2048

Counter = Callable[[ChatRequest], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt: int  # prompt tokens, exact or an upper bound
    output: int  # the most completion tokens the request may produce
    exact: bool  # the prompt count is exact (a local model's tokenizer)

    @property
    def total(self) -> int:
        return self.prompt + self.output


def _message_bytes(m: Message) -> int:
    n = len(m.content.encode()) + len(m.thinking.encode()) + MESSAGE_OVERHEAD
    for call in m.tool_calls:
        n += len(call.name.encode()) + len(json.dumps(call.arguments, ensure_ascii=False).encode())
    return n + IMAGE_TOKENS * len(m.images)


def prompt_bound(request: ChatRequest) -> int:
    """An upper bound on the request's prompt tokens, from its text's length."""
    n = sum(_message_bytes(m) for m in request.messages)
    for text in (request.prompt, request.suffix, request.prefix, request.template):
        n += len(text.encode()) if text else 0
    for tool in request.tools:
        n += len(json.dumps(tool.as_openai(), ensure_ascii=False).encode())
    return n + len(request.context) + IMAGE_TOKENS * len(request.images) + MESSAGE_OVERHEAD


def output_cap(request: ChatRequest, default: int) -> int:
    cap = request.sampling.num_predict
    per_choice = cap if cap is not None and cap > 0 else default
    return per_choice * max(1, request.n)


async def estimate(
    requests: tuple[ChatRequest, ...],
    default_output: int,
    counter: Counter | None = None,
) -> Estimate:
    """The estimate for one chat operation (several prompts of a completions request
    add up); ``counter`` counts exactly when the local engine serves the model."""
    prompt = 0
    for request in requests:
        prompt += await counter(request) if counter is not None else prompt_bound(request)
    output = sum(output_cap(r, default_output) for r in requests)
    return Estimate(prompt, output, counter is not None)


def embed_estimate(request: EmbedRequest) -> Estimate:
    return Estimate(sum(len(t.encode()) + 2 for t in request.inputs), 0, False)


def relay_estimate(body_size: int, max_tokens: int | None, n: int, default_output: int) -> Estimate:
    """The fast path's bound: the body's length, and its own output cap."""
    cap = max_tokens if max_tokens is not None and max_tokens > 0 else default_output
    return Estimate(body_size, cap * max(1, n), False)
