"""Per-request sampling with llama.cpp's own sampler chain, and token logprobs.

The chain follows llama.cpp's usual order: logit bias, repetition penalties, grammar,
then either greedy choice (temperature 0) or top-k, typical, top-p, min-p,
temperature and a seeded draw. Each request gets its own chain, so its state
(penalty history, grammar position, random generator) belongs to that request alone.
"""

from __future__ import annotations

import math
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaContext, LlamaModel, LlamaSampler
from llama_cpp.llama_grammar import LlamaGrammar

from llmux.core.chunks import TokenLogprob

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp draws a random seed


def build_sampler(
    model: LlamaModel,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    typical_p: float,
    repeat_penalty: float,
    repeat_last_n: int,
    presence_penalty: float,
    frequency_penalty: float,
    seed: int | None,
    grammar: LlamaGrammar | None,
    logit_bias: dict[int, float] | None = None,
) -> LlamaSampler:
    n_vocab = model.n_vocab()
    sampler = LlamaSampler()
    if logit_bias:
        sampler.add_logit_bias(n_vocab, logit_bias)
    sampler.add_penalties(
        n_vocab, repeat_last_n, repeat_penalty, frequency_penalty, presence_penalty
    )
    if grammar is not None:
        sampler.add_grammar(model, grammar)
    if temperature <= 0:
        sampler.add_greedy()
        return sampler
    sampler.add_top_k(top_k)
    sampler.add_typical(typical_p, 1)
    sampler.add_top_p(top_p, 1)
    sampler.add_min_p(min_p, 1)
    sampler.add_temp(temperature)
    sampler.add_dist(RANDOM_SEED if seed is None else seed & 0xFFFFFFFF)
    return sampler


def _entry(model: LlamaModel, token: int, logprob: float) -> tuple[str, float, tuple[int, ...]]:
    raw = model.detokenize([token], special=True)
    return raw.decode("utf-8", errors="replace"), logprob, tuple(raw)


def token_logprob(
    model: LlamaModel, ctx: LlamaContext, index: int, token: int, top_n: int
) -> TokenLogprob:
    """The chosen token's log probability under the model (before sampling filters) and
    the ``top_n`` most likely alternatives, from the logits at batch row ``index``."""
    n_vocab = model.n_vocab()
    ptr: Any = llama_cpp.llama_get_logits_ith(ctx.ctx, index)
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
    peak = float(logits.max())
    log_z = peak + math.log(float(np.exp(logits - peak).sum()))
    text, lp, raw = _entry(model, token, float(logits[token]) - log_z)
    top: list[tuple[str, float, tuple[int, ...]]] = []
    if top_n > 0:
        ids = np.argpartition(-logits, top_n)[:top_n]
        ids = ids[np.argsort(-logits[ids])]
        top = [_entry(model, int(i), float(logits[i]) - log_z) for i in ids]
    return TokenLogprob(token=text, logprob=lp, bytes=raw, top=tuple(top))
