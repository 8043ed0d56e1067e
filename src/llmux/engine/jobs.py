"""What the engine's scheduler is given and what it sends back.

A :class:`Job` is one generation with every default resolved; the scheduler answers
with a stream of :data:`Event` values: text pieces, then exactly one
:class:`DoneEvent` or :class:`ErrorEvent`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmux.core.chunks import Metrics, TokenLogprob
from llmux.core.request import OutputFormat


@dataclass(frozen=True, slots=True)
class LoadParams:
    n_ctx: int  # context window of one sequence slot
    n_threads: int
    n_gpu_layers: int
    n_slots: int = 1  # sequences decoded together (continuous batching)
    flash_attn: bool = True  # llama.cpp's "auto": on where the backend supports it


@dataclass(frozen=True, slots=True)
class ResolvedSampling:
    """Sampling with every default filled in (request > model params > API defaults).

    The field defaults are Ollama's ``DefaultOptions``; :data:`NEUTRAL` is the OpenAI
    APIs' (temperature 1, top_p 1, no top-k, no penalties)."""

    num_predict: int = -1
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    num_keep: int = 4  # tokens kept at the start when the context shifts


OLLAMA_DEFAULTS = ResolvedSampling()
NEUTRAL = ResolvedSampling(temperature=1.0, top_k=0, top_p=1.0, repeat_penalty=1.0)
PENALTIES = ("repeat_penalty", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class Job:
    prompt: str
    sampling: ResolvedSampling
    format: OutputFormat = None
    context: tuple[int, ...] = ()
    add_bos: bool = True
    return_context: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's only
    deadline: float | None = None  # time.monotonic() by which the reply must be done
    background: bool = False  # a Batch API line: yields to interactive requests (batch.py)


@dataclass(frozen=True, slots=True)
class TextEvent:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class DoneEvent:
    reason: str  # "stop" or "length"
    metrics: Metrics
    context: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    error: BaseException


Event = TextEvent | DoneEvent | ErrorEvent
