"""Megatron's mmap indexed dataset (`PREFIX.bin` + `PREFIX.idx`), written and read with numpy alone.

Byte layout of megatron-core's `IndexedDatasetBuilder` (shared/reference/data-prep.md §1): `.idx` = magic, version 1,
dtype code, sequence count N, document count D, int32 lengths[N], int64 byte pointers[N], int64 document indices[D];
`.bin` = the token ids back to back. Tokens are uint16 below a vocabulary of 65,500 and int32 above, as Megatron's
`DType.optimal_dtype` decides. Megatron itself stays out of the runtime (it drags torch in); the tests compare bytes
with it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7, np.uint16: 8}
DTYPES = {code: np.dtype(t) for t, code in CODES.items()}


def optimal_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


class DatasetWriter:
    """Append documents, then `finalize()`; both files appear atomically (written as .tmp, then renamed)."""

    def __init__(self, prefix: str | Path, vocab_size: int) -> None:
        self.prefix = Path(prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = optimal_dtype(vocab_size)
        self._bin_tmp = Path(f"{self.prefix}.bin.tmp")
        self._bin = self._bin_tmp.open("wb")
        self._lengths: list[np.ndarray] = []
        self.documents = 0
        self.tokens = 0

    def add_documents(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Many documents at once: their tokens back to back, and each one's length (one sequence per document)."""
        self._bin.write(np.ascontiguousarray(flat, dtype=self.dtype).tobytes())
        self._lengths.append(np.asarray(lengths, dtype=np.int32))
        self.documents += len(lengths)
        self.tokens += int(np.sum(lengths, dtype=np.int64))

    def add_document(self, ids: list[int] | np.ndarray) -> None:
        self.add_documents(np.asarray(ids), np.array([len(ids)]))

    def finalize(self) -> tuple[Path, Path]:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        idx_tmp = Path(f"{self.prefix}.idx.tmp")
        write_index(idx_tmp, self.dtype, lengths, np.arange(len(lengths) + 1, dtype=np.int64))
        os.replace(self._bin_tmp, f"{self.prefix}.bin")
        os.replace(idx_tmp, f"{self.prefix}.idx")
        return Path(f"{self.prefix}.bin"), Path(f"{self.prefix}.idx")


def write_index(path: Path, dtype: np.dtype, lengths: np.ndarray, doc_indices: np.ndarray) -> None:
    pointers = np.zeros(len(lengths), np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", VERSION))
        f.write(struct.pack("<B", CODES[dtype.type]))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(doc_indices)))
        f.write(lengths.astype(np.int32).tobytes(order="C"))
        f.write(pointers.tobytes(order="C"))
        f.write(doc_indices.astype(np.int64).tobytes(order="C"))


class DatasetError(ValueError):
    pass


class MegatronDataset:
    """Reader: `len(ds)` documents, `ds[i]` token ids of document i (memory-mapped)."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        idx = Path(f"{prefix}.idx").read_bytes()
        if idx[:9] != MAGIC:
            raise DatasetError(f"{prefix}.idx: not a Megatron index (bad magic)")
        (version,) = struct.unpack_from("<Q", idx, 9)
        code, n, d = idx[17], *struct.unpack_from("<QQ", idx, 18)
        if version != VERSION or code not in DTYPES:
            raise DatasetError(f"{prefix}.idx: unsupported version {version} or dtype code {code}")
        self.dtype = DTYPES[code]
        off = 34
        self.lengths = np.frombuffer(idx, np.int32, n, off)
        self.pointers = np.frombuffer(idx, np.int64, n, off + 4 * n)
        self.doc_indices = np.frombuffer(idx, np.int64, d, off + 12 * n)
        size = Path(f"{prefix}.bin").stat().st_size
        expected = int(self.lengths.astype(np.int64).sum()) * self.dtype.itemsize
        if size != expected:
            raise DatasetError(f"{prefix}.bin: {size} bytes, the index describes {expected}")
        self._bin = np.memmap(f"{prefix}.bin", dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self._bin[start : start + int(self.lengths[i])])

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.astype(np.int64).sum())


def merge(prefixes: list[str | Path], out: str | Path) -> tuple[Path, Path]:
    """Concatenate datasets of the same dtype (what Megatron's tools/merge_datasets.py does)."""
    parts = [MegatronDataset(p) for p in prefixes]
    if len({p.dtype for p in parts}) > 1:
        raise DatasetError("cannot merge datasets of different dtypes")
    dtype = parts[0].dtype
    out = Path(out)
    bin_tmp = Path(f"{out}.bin.tmp")
    with bin_tmp.open("wb") as f:
        for p in prefixes:
            with open(f"{p}.bin", "rb") as src:
                while chunk := src.read(1 << 24):
                    f.write(chunk)
    lengths = np.concatenate([p.lengths for p in parts])
    docs = [np.zeros(1, np.int64)]
    offset = 0
    for p in parts:
        docs.append(p.doc_indices[1:] + offset)
        offset += len(p)
    write_index(Path(f"{out}.idx.tmp"), dtype, lengths, np.concatenate(docs))
    os.replace(bin_tmp, f"{out}.bin")
    os.replace(f"{out}.idx.tmp", f"{out}.idx")
    return Path(f"{out}.bin"), Path(f"{out}.idx")
