"""Read a GGUF file's header: the key/value metadata and tensor shapes.

Only the header is read (never tensor data). Large arrays (the vocabulary, merges)
are skipped unless ``verbose`` is asked for, which keeps reading a 100k-token
vocabulary model to a few milliseconds; the general-purpose ``gguf`` package builds a
numpy view per string and takes seconds for the same header.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from llmux.errors import InvalidRequest

MAGIC = b"GGUF"
BIG_ARRAY = 256
VOCAB_KEY = "tokenizer.ggml.tokens"  # arrays longer than this are summarised unless verbose

_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

# llama.cpp's llama_ftype values for general.file_type
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def unpack(self, s: struct.Struct) -> Any:
        data = self.f.read(s.size)
        if len(data) != s.size:
            raise ValueError("truncated GGUF header")
        return s.unpack(data)[0]

    def string(self) -> str:
        n = self.unpack(_U64)
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("truncated GGUF string")
        return data.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.f.seek(self.unpack(_U64), 1)

    def value(self, vtype: int, keep_arrays: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown GGUF value type {vtype}")
        etype, count = self.unpack(_U32), self.unpack(_U64)
        if keep_arrays or count <= BIG_ARRAY:
            return [self.value(etype, keep_arrays) for _ in range(count)]
        if etype in _SCALARS:  # fixed size: skip in one seek
            self.f.seek(_SCALARS[etype].size * count, 1)
        elif etype == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            for _ in range(count):
                self.value(etype, False)
        return _Skipped(count)


@dataclass(frozen=True, slots=True)
class _Skipped:
    """Stands in for a large array that was not read."""

    length: int


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    metadata: dict[str, Any]
    parameter_count: int
    tensor_count: int
    tokens: tuple[str, ...] = ()

    def token_text(self, key: str) -> str:
        """Text of a special token named by id in the metadata, e.g. ``bos_token_id``."""
        index = self.get(f"tokenizer.ggml.{key}")
        if isinstance(index, int) and 0 <= index < len(self.tokens):
            return self.tokens[index]
        return ""

    def get(self, key: str, default: Any = None) -> Any:
        value = self.metadata.get(key, default)
        return default if isinstance(value, _Skipped) else value

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "unknown"))

    def arch_value(self, suffix: str) -> Any:
        return self.get(f"{self.architecture}.{suffix}")

    @property
    def context_length(self) -> int | None:
        v = self.arch_value("context_length")
        return int(v) if v is not None else None

    @property
    def embedding_length(self) -> int | None:
        v = self.arch_value("embedding_length")
        return int(v) if v is not None else None

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of f16 KV cache one token takes in every layer (0 when unknown)."""

        def widest(value: Any, default: int) -> int:
            if isinstance(value, list):
                return max((int(v) for v in value), default=default)
            return int(value) if value is not None else default

        n_layer = widest(self.arch_value("block_count"), 0)
        n_head = widest(self.arch_value("attention.head_count"), 1) or 1
        n_head_kv = widest(self.arch_value("attention.head_count_kv"), n_head)
        head = (self.embedding_length or 0) // n_head
        k = widest(self.arch_value("attention.key_length"), head)
        v = widest(self.arch_value("attention.value_length"), head)
        return n_layer * n_head_kv * (k + v) * 2

    @property
    def file_type(self) -> str:
        ft = self.get("general.file_type")
        return FILE_TYPES.get(int(ft), f"unknown({ft})") if ft is not None else "unknown"

    @property
    def chat_template(self) -> str | None:
        t = self.get("tokenizer.chat_template")
        return str(t) if t else None

    @property
    def has_fim_tokens(self) -> bool:
        return self.get("tokenizer.ggml.fim_pre_token_id") is not None

    @property
    def parameter_size(self) -> str:
        return format_parameter_count(self.parameter_count)

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """The KV map as Ollama's ``/api/show`` gives it (big arrays empty unless verbose)."""
        out: dict[str, Any] = {}
        for key, value in self.metadata.items():
            if key == "tokenizer.chat_template":
                continue
            out[key] = [] if isinstance(value, _Skipped) else value
        out["general.parameter_count"] = self.parameter_count
        return out


def format_parameter_count(n: int) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}".rstrip("0").rstrip(".") + unit
    return str(n)


def read_gguf(path: str | Path, *, verbose: bool = False) -> GGUFInfo:
    """Parse the header of a GGUF file. Raises InvalidRequest for a non-GGUF file."""
    with open(path, "rb") as raw:
        f: BinaryIO = raw
        if f.read(4) != MAGIC:
            raise InvalidRequest(f"{Path(path).name} is not a GGUF file")
        r = _Reader(f)
        version = r.unpack(_U32)
        if version < 2:
            raise InvalidRequest(f"GGUF version {version} is too old; convert the model again")
        n_tensors, n_kv = r.unpack(_U64), r.unpack(_U64)
        metadata: dict[str, Any] = {}
        tokens: list[str] = []
        try:
            for _ in range(n_kv):
                key = r.string()
                if key == VOCAB_KEY:
                    tokens = r.value(r.unpack(_U32), True)
                    metadata[key] = tokens if verbose else _Skipped(len(tokens))
                    continue
                metadata[key] = r.value(r.unpack(_U32), verbose)
            params = _count_parameters(r, n_tensors)
        except (ValueError, struct.error, OverflowError) as exc:
            raise InvalidRequest(f"{Path(path).name}: corrupt GGUF header ({exc})") from exc
    return GGUFInfo(
        metadata=metadata, parameter_count=params, tensor_count=n_tensors, tokens=tuple(tokens)
    )


def _count_parameters(r: _Reader, n_tensors: int) -> int:
    total = 0
    read_u64: Callable[[], int] = lambda: r.unpack(_U64)  # noqa: E731
    for _ in range(n_tensors):
        r.skip_string()
        n_dims = r.unpack(_U32)
        count = 1
        for _ in range(n_dims):
            count *= read_u64()
        r.unpack(_U32)  # tensor type
        r.unpack(_U64)  # data offset
        total += count
    return total
