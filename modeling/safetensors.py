"""Hugging Face weights without torch: `.safetensors` files (one, or sharded with their index) as numpy arrays.

Written here — the format is an 8-byte length, a JSON header and raw little-endian data — because numpy has no
bfloat16, the dtype most Llama and Qwen checkpoints ship in (its upper half is an fp32)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from glotta.core.errors import invalid

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    return [p for p in [path / "model.safetensors"] if p.is_file()]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file as fp32/int numpy arrays (memory-mapped until converted)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = np.memmap(path, np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        raw = data[start:stop]
        if info["dtype"] == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            arr = raw.view(_DTYPES[info["dtype"]])
        else:
            raise invalid(f"{path}: tensor {name} has dtype {info['dtype']}, which Glotta cannot read", "weights")
        out[name] = arr.reshape(info["shape"])
    return out
