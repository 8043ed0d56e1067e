"""The Go-template subset Ollama TEMPLATE layers are rendered with."""

from __future__ import annotations

from typing import Any

import pytest

from llmux.engine.gotemplate import render_go_template
from llmux.errors import InvalidRequest

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
