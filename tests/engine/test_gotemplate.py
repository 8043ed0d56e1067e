"""The Go-template subset Ollama TEMPLATE layers are rendered with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llmux.engine.gotemplate import render_go_template
from llmux.errors import InvalidRequest
from llmux.models.create import Create, CreateSpec
from llmux.models.store import ModelStore

VALUES: dict[str, Any] = {
    "System": "Be kind.",
    "Prompt": "Hi",
    "Response": "",
    "Messages": [
        {"Role": "system", "Content": "Be kind."},
        {"Role": "user", "Content": "Hi"},
        {"Role": "assistant", "Content": "Hello"},
        {"Role": "user", "Content": "Bye"},
    ],
}

CHATML_LEGACY = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}"
)
LLAMA3_STYLE = (
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 -}}"
    "<|{{ .Role }}|>{{ .Content }}"
    '{{ if and $last (eq .Role "user") }}<|assistant|>{{ end }}'
    "{{- end }}"
)


def test_legacy_system_prompt_template() -> None:
    assert render_go_template(CHATML_LEGACY, VALUES) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_range_over_messages_with_variables_and_functions() -> None:
    assert render_go_template(LLAMA3_STYLE, VALUES) == (
        "<|system|>Be kind.<|user|>Hi<|assistant|>Hello<|user|>Bye<|assistant|>"
    )


def test_else_if_with_and_comments_and_trims() -> None:
    src = (
        "{{/* role tags */}}{{ range .Messages -}}\n"
        '  {{ if eq .Role "user" }}U{{ else if eq .Role "assistant" }}A{{ else }}S{{ end }}\n'
        "{{- end }}|{{ with .System }}[{{ . }}]{{ end }}{{ range .Nothing }}x{{ else }}none{{ end }}"
    )
    assert render_go_template(src, VALUES) == "SUAU|[Be kind.]none"


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("{{ .Prompt | upper }}", "pipelines"),
        ("{{ json .Messages }}", "function 'json' is not supported"),
        ('{{ template "x" }}', "not supported"),
        ("{{ if .System }}open", "without {{ end }}"),
        ("{{ end }}", "unexpected {{ end }}"),
    ],
)
def test_unsupported_forms_are_refused_clearly(src: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("{", r"\{").replace("}", r"\}")):
        render_go_template(src, VALUES)


# -- the budget (issue 21, items 7 and 8) -----------------------------------------------
NESTED_RANGES = "{{ range $.Prompt }}" * 5 + "x" + "{{ end }}" * 5
NESTED_MESSAGES = "{{ range $.Messages }}" * 5 + "{{ .Content }}" + "{{ end }}" * 5


def test_range_over_a_string_is_refused_as_in_go() -> None:
    with pytest.raises(InvalidRequest, match="range can't iterate over a string"):
        render_go_template(NESTED_RANGES, {**VALUES, "Prompt": "p" * 30})


def test_nested_ranges_over_the_messages_stop_at_the_budget() -> None:
    values = {**VALUES, "Messages": VALUES["Messages"] * 10}  # 40**5 iterations unbudgeted
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="budget"):
        render_go_template(NESTED_MESSAGES, values)
    assert time.monotonic() - started < 5


def test_output_size_is_budgeted() -> None:
    with pytest.raises(InvalidRequest, match="characters of output"):
        render_go_template("{{ range .Messages }}{{ $.Prompt }}{{ end }}", VALUES, max_output=5)


def test_range_over_an_integer_counts_and_a_huge_one_is_over_budget() -> None:
    assert render_go_template("{{ range 5 }}x{{ . }}{{ end }}", VALUES) == "x0x1x2x3x4"
    assert render_go_template("{{ range $i, $v := 2 }}{{ $i }}{{ end }}", VALUES) == "01"
    with pytest.raises(InvalidRequest, match="budget"):
        render_go_template("{{ range 10000000000 }}x{{ end }}", VALUES)
    with pytest.raises(InvalidRequest, match="range can't iterate over a bool"):
        render_go_template("{{ range true }}x{{ end }}", VALUES)


@pytest.mark.parametrize(
    "src",
    [
        "{{ if 1 }}" * 5000 + "x" + "{{ end }}" * 5000,
        "{{ " + "(" * 50_000 + "1" + ")" * 50_000 + " }}",
    ],
)
def test_deep_nesting_is_a_400_not_a_recursion_error(src: str) -> None:
    with pytest.raises(InvalidRequest, match="nested more than"):
        render_go_template(src, VALUES)


def test_lexing_is_linear() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="unclosed action"):
        render_go_template("{{ " * 100_000, VALUES)
    assert len(render_go_template("{{ .Prompt }}" * 20_000, VALUES)) == 40_000
    assert time.monotonic() - started < 5


def test_create_refuses_a_template_over_budget(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(InvalidRequest, match="budget"):
        Create(store, CreateSpec(model="loop", from_="smollm2:135m", template=NESTED_MESSAGES))
    with pytest.raises(InvalidRequest, match="range can't iterate"):
        Create(store, CreateSpec(model="loop", from_="smollm2:135m", template=NESTED_RANGES))


@pytest.mark.parametrize("parameters", [{"top_k": "many"}, {"num_ctx": 2**70}, {"stop": 3}])
def test_create_refuses_parameters_no_request_could_use(
    tmp_path: Path, parameters: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest, match="option"):
        Create(ModelStore(tmp_path), CreateSpec(model="x", from_="y", parameters=parameters))
