"""Params layers: several are merged key by key, and an unreadable one never turns
every request to the model into a 500."""

from __future__ import annotations

import json
from pathlib import Path

from llmux.core.names import ModelName
from llmux.models.bundled import bundled_gguf
from llmux.models.store import LAYER_PREFIX, ModelStore


def test_params_layers_merge_and_junk_is_skipped(tmp_path: Path) -> None:
    source = bundled_gguf()
    assert source is not None
    store = ModelStore(tmp_path)
    name = ModelName.parse("m:1")
    base = store.import_gguf(name, source, text_layers={"params": json.dumps({"num_ctx": 8192})})
    manifest = json.loads(store.manifest_path(name).read_text())
    for text in (json.dumps({"temperature": 0.5, "num_ctx": 1024}), "not json"):
        layer = {"mediaType": LAYER_PREFIX + "params", **store.write_blob(text.encode())}
        manifest["layers"].append(layer)
        store.write_manifest(name, manifest["config"], manifest["layers"])
    record = store.resolve(name)
    assert record.params == {"num_ctx": 1024, "temperature": 0.5}
    assert base.params == {"num_ctx": 8192}
