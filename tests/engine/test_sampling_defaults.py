"""Sampling defaults per API: Ollama's on the native API, neutral on the OpenAI ones,
the model's parameter layer over both, and no penalty under a grammar unless asked."""

from __future__ import annotations

from llmux.core.request import Sampling
from llmux.engine.engine import resolve_sampling
from llmux.protocols.openai import convert
from llmux.protocols.openai.wire import ChatCompletionBody


def openai_sampling(**body: object) -> Sampling:
    chat = ChatCompletionBody.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    )
    return convert.chat_to_core(chat).sampling


def test_native_api_gets_ollamas_defaults() -> None:
    s = resolve_sampling(Sampling(), {})
    assert (s.temperature, s.top_k, s.top_p, s.repeat_penalty, s.repeat_last_n) == (
        0.8,
        40,
        0.9,
        1.1,
        64,
    )


def test_openai_api_gets_neutral_sampling() -> None:
    s = resolve_sampling(openai_sampling(), {})
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty) == (1.0, 0, 1.0, 0.0, 1.0)
    assert (s.presence_penalty, s.frequency_penalty) == (0.0, 0.0)


def test_the_models_parameters_win_over_either_api_default() -> None:
    params = {"temperature": 0.3, "repeat_penalty": 1.3, "top_k": 20}
    for sampling in (Sampling(), openai_sampling()):
        s = resolve_sampling(sampling, params)
        assert (s.temperature, s.repeat_penalty, s.top_k) == (0.3, 1.3, 20)


def test_request_values_win() -> None:
    s = resolve_sampling(
        openai_sampling(temperature=0.2, presence_penalty=0.5), {"temperature": 0.9}
    )
    assert (s.temperature, s.presence_penalty) == (0.2, 0.5)


def test_no_penalty_under_a_grammar_unless_the_request_asks() -> None:
    params = {"repeat_penalty": 1.3, "presence_penalty": 0.4}
    s = resolve_sampling(Sampling(), params, constrained=True)
    assert (s.repeat_penalty, s.presence_penalty, s.frequency_penalty) == (1.0, 0.0, 0.0)
    asked = resolve_sampling(Sampling(repeat_penalty=1.2), params, constrained=True)
    assert asked.repeat_penalty == 1.2
