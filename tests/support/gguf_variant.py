"""Write a copy of a GGUF file with some metadata changed.

No model can be downloaded here, so tests that need a model able to think, fill in the
middle or the like take the bundled SmolLM2 weights and give them other metadata (a
thinking chat template, FIM token ids). Tensor infos and data are copied unchanged;
only the key/value section is rewritten and the data re-aligned.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import BinaryIO

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT32 = 8, 9, 4


def _skip_value(f: BinaryIO, vtype: int) -> None:
    if vtype in SCALAR:
        f.seek(SCALAR[vtype], 1)
    elif vtype == STRING:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(n, 1)
    elif vtype == ARRAY:
        item, count = struct.unpack("<IQ", f.read(12))
        if item in SCALAR:
            f.seek(SCALAR[item] * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _entry(key: str, value: str | int) -> bytes:
    if isinstance(value, str):
        return _string(key) + struct.pack("<I", STRING) + _string(value)
    return _string(key) + struct.pack("<II", UINT32, value)


def write_variant(source: Path, dest: Path, changes: dict[str, str | int]) -> None:
    """Copy ``source`` to ``dest`` with the metadata keys in ``changes`` set (str or uint32)."""
    with source.open("rb") as f:
        magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        assert magic == b"GGUF", source
        kept: list[bytes] = []
        alignment = 32
        for _ in range(n_kv):
            start = f.tell()
            (n,) = struct.unpack("<Q", f.read(8))
            key = f.read(n).decode()
            (vtype,) = struct.unpack("<I", f.read(4))
            value_at = f.tell()
            _skip_value(f, vtype)
            end = f.tell()
            if key == "general.alignment":
                f.seek(value_at)
                (alignment,) = struct.unpack("<I", f.read(4))
                f.seek(end)
            if key not in changes:
                f.seek(start)
                kept.append(f.read(end - start))
        infos_at = f.tell()
        for _ in range(n_tensors):
            (n,) = struct.unpack("<Q", f.read(8))
            f.seek(n, 1)
            (dims,) = struct.unpack("<I", f.read(4))
            f.seek(8 * dims + 4 + 8, 1)
        infos_end = f.tell()
        f.seek(infos_at)
        infos = f.read(infos_end - infos_at)
        data_at = -(-infos_end // alignment) * alignment
        kept += [_entry(k, v) for k, v in changes.items()]
        head = struct.pack("<4sIQQ", magic, version, n_tensors, len(kept)) + b"".join(kept) + infos
        head += b"\0" * (-len(head) % alignment)
        f.seek(data_at)
        with dest.open("wb") as out:
            out.write(head)
            shutil.copyfileobj(f, out, 1 << 20)
