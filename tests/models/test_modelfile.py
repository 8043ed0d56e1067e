"""Modelfile parsing (what `llmux create -f` reads)."""

from __future__ import annotations

import pytest

from llmux.errors import InvalidRequest
from llmux.models.modelfile import parse_modelfile

MODELFILE = '''
# a course assistant
FROM ./weights/model.gguf
ADAPTER ./lora.gguf
parameter temperature 0.3
PARAMETER num_ctx 2048
PARAMETER stop "<|im_end|>"
PARAMETER stop <|endoftext|>
PARAMETER use_mmap false
TEMPLATE """{{ if .System }}{{ .System }}{{ end }}
{{ .Prompt }}"""
SYSTEM You are a "careful" tutor.
MESSAGE user What is 2+2?
MESSAGE assistant """Four."""
LICENSE """MIT
and more"""
LICENSE Apache-2.0
'''


def test_every_instruction() -> None:
    mf = parse_modelfile(MODELFILE)
    assert mf.from_ == "./weights/model.gguf" and mf.adapters == ["./lora.gguf"]
    assert mf.parameters == {
        "temperature": 0.3,
        "num_ctx": 2048,
        "stop": ["<|im_end|>", "<|endoftext|>"],
        "use_mmap": False,
    }
    assert mf.template == "{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}"
    assert mf.system == 'You are a "careful" tutor.'
    assert mf.messages == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Four."},
    ]
    assert mf.license == ["MIT\nand more", "Apache-2.0"]


def test_quoted_values_and_model_names() -> None:
    mf = parse_modelfile('FROM smollm2:135m\nSYSTEM "say \\"hi\\""\n')
    assert mf.from_ == "smollm2:135m" and mf.system == 'say "hi"'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SYSTEM hi", "no FROM line"),
        ("FROM x\nPARAMETER nonsense 1", "line 2: unknown parameter 'nonsense'"),
        ("FROM x\nPARAMETER num_ctx lots", "needs a int value"),
        ("FROM x\nMESSAGE robot hi", "MESSAGE role must be one of"),
        ('FROM x\nTEMPLATE """open', 'unterminated """'),
        ("FROM x\nRUN rm -rf /", "unknown instruction 'RUN'"),
    ],
)
def test_errors_point_at_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        parse_modelfile(text)
