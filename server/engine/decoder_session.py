"""ONNX Runtime over the fused decoder graph, with the key/value cache in preallocated slots written in place.

The cache is one buffer per layer and kind, [rows, KV, T, D]. A running sequence owns a row (its slot) and its
tokens sit at the start of that row, so rows of different lengths need no padding: `seqlens_k` tells attention where
each row ends. Running rows are kept in slots 0..n−1, so every step binds the contiguous views `buffer[:n]` as both
past and present (I/O binding: no copy in, none out, no concatenation). When a row leaves, the last row moves into
its slot. Buffers grow by doubling, in rows up to the batch limit and in length up to the context.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from glotta.modeling.decoder_graph import past_names, present_names


def session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if os.environ.get("GLOTTA_ORT_SPIN", "1") == "0":  # spinning threads: faster, but busy between steps
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class KVCache:
    def __init__(self, n_layer: int, kv_heads: int, head_dim: int, max_rows: int, max_len: int) -> None:
        self.shape = (kv_heads, head_dim)
        self.max_rows, self.max_len = max_rows, max_len
        self.n_buffers = 2 * n_layer
        self.rows, self.length, self.generation = 0, 0, 0
        self.buffers: list[np.ndarray] = []
        self.ensure(1, min(max_len, 64))

    def ensure(self, rows: int, length: int) -> None:
        """Room for `rows` slots of `length` tokens (grown by doubling; contents kept)."""
        if rows <= self.rows and length <= self.length:
            return
        if rows > self.max_rows or length > self.max_len:
            raise ValueError(f"cache of {rows} rows × {length} tokens exceeds {self.max_rows} × {self.max_len}")
        new_rows = min(self.max_rows, max(rows, 2 * self.rows))
        new_len = min(self.max_len, max(length, 2 * self.length))
        kv, d = self.shape
        grown = []
        for i in range(self.n_buffers):
            buf = np.zeros((new_rows, kv, new_len, d), np.float32)
            if self.buffers:
                buf[: self.rows, :, : self.length] = self.buffers[i]
            grown.append(buf)
        self.buffers, self.rows, self.length = grown, new_rows, new_len
        self.generation += 1  # bindings to the old buffers are stale

    def views(self, start: int, stop: int) -> list[np.ndarray]:
        return [b[start:stop] for b in self.buffers]

    def move(self, src: int, dst: int, length: int) -> None:
        if length == 0:
            return
        for b in self.buffers:
            b[dst, :, :length] = b[src, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        for buf in self.buffers:
            tmp = buf[a, :, :length].copy()
            buf[a, :, :length] = buf[b, :, :length]
            buf[b, :, :length] = tmp

    def read(self, row: int, start: int, stop: int) -> list[np.ndarray]:
        """Copies of one row's cache for tokens [start, stop) (what the prefix cache keeps)."""
        return [b[row, :, start:stop].copy() for b in self.buffers]

    def write(self, row: int, start: int, blocks: list[np.ndarray]) -> None:
        for b, blk in zip(self.buffers, blocks):
            b[row, :, start : start + blk.shape[1]] = blk


class DecoderSession:
    """One fused decoder graph and the cache of its running rows."""

    def __init__(self, path: str | Path, threads: int, max_rows: int, max_len: int) -> None:
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "seqlens_k" not in inputs:
            raise ValueError(f"{path}: not a fused decoder graph (inputs {sorted(inputs)})")
        self.uses_positions = "position_ids" in inputs
        self.n_layer = sum(1 for n in inputs if n.startswith("past.")) // 2
        _, kv_heads, _, head_dim = inputs["past.0.key"].shape
        self.vocab_size = int(self.session.get_outputs()[0].shape[-1])
        self.cache = KVCache(self.n_layer, int(kv_heads), int(head_dim), max_rows, max_len)
        self._past, self._present = past_names(self.n_layer), present_names(self.n_layer)
        self._bindings: dict[tuple, _Bound] = {}

    def run(self, ids: np.ndarray, positions: np.ndarray, seqlens: np.ndarray, rows: tuple[int, int],
            logits_index: np.ndarray) -> np.ndarray:
        """Feed `ids` [b, s] to slots rows[0]..rows[1]−1; `seqlens` [b]: tokens in each row after this call.

        Returns logits [len(logits_index), V] for the flattened [b·s] positions `logits_index` — a buffer of this
        session, valid until the next call.
        """
        start, stop = rows
        self.cache.ensure(stop, int(seqlens.max()))
        bound = self._bound(start, stop, ids.shape[1], len(logits_index))
        bound.ids[...] = ids
        if self.uses_positions:
            bound.positions[...] = positions
        bound.seqlens[...] = seqlens - 1
        bound.total[...] = seqlens.max()
        bound.index[...] = logits_index
        self.session.run_with_iobinding(bound.io)
        return bound.logits

    def _bound(self, start: int, stop: int, seq: int, n_logits: int) -> "_Bound":
        """The I/O binding for this shape, made once: per step only the values of small arrays change (binding
        inputs and wrapping the cache views anew cost a fifth of a batch-1 step)."""
        key = (start, stop, seq, n_logits, self.cache.generation)
        bound = self._bindings.get(key)
        if bound is None:
            if len(self._bindings) >= 32:  # prefill shapes vary; decode shapes are few and come back
                self._bindings.clear()
            bound = self._bindings[key] = _Bound(self, start, stop, seq, n_logits)
        return bound

    def prefill(self, prompts: list[list[int]], first_row: int, starts: list[int] | None = None,
                all_logits: list[bool] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Feed prompts (right-padded into one batch) into consecutive slots from `first_row`.

        `starts[r]`: tokens of row r already in its slot (a cached prefix); only `prompts[r][starts[r]:]` is run.
        Rows with a cached prefix must be run alone (attention needs one past length per call for s > 1).
        Returns, per row, the logits of its fed positions (all of them where `all_logits[r]`, else the last) and
        the row lengths.
        """
        starts = starts or [0] * len(prompts)
        if any(starts) and len(prompts) > 1:
            raise ValueError("rows with a cached prefix are prefilled one at a time")
        all_logits = all_logits or [False] * len(prompts)
        fed = [p[s:] for p, s in zip(prompts, starts)]
        width = max(len(f) for f in fed)
        ids = np.zeros((len(fed), width), np.int64)
        positions = np.zeros_like(ids)
        index: list[np.ndarray] = []
        for r, (f, s) in enumerate(zip(fed, starts)):
            ids[r, : len(f)] = f
            positions[r] = np.minimum(np.arange(s, s + width), s + len(f) - 1)
            base = r * width
            index.append(base + (np.arange(len(f)) if all_logits[r] else np.array([len(f) - 1])))
        lengths = np.array([len(p) for p in prompts], np.int64)
        logits = self.run(ids, positions, lengths, (first_row, first_row + len(fed)), np.concatenate(index))
        out, at = [], 0
        for ix in index:
            out.append(logits[at : at + len(ix)])
            at += len(ix)
        return out, lengths

    def decode(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One token for each of the rows 0..n−1 (`lengths`: tokens already in each); logits [n, V]."""
        n = len(tokens)
        return self.run(tokens.reshape(n, 1), lengths.reshape(n, 1), lengths + 1, (0, n), np.arange(n))


class _Bound:
    """Arrays bound to one I/O binding: ONNX Runtime reads and writes them in place (CPU OrtValues share memory)."""

    def __init__(self, session: DecoderSession, start: int, stop: int, seq: int, n_logits: int) -> None:
        b = stop - start
        self.ids = np.zeros((b, seq), np.int64)
        self.positions = np.zeros((b, seq), np.int64)
        self.seqlens = np.zeros(b, np.int32)
        self.total = np.zeros((), np.int32)
        self.index = np.zeros(n_logits, np.int64)
        self.logits = np.zeros((n_logits, session.vocab_size), np.float32)
        self.io = session.session.io_binding()
        self._values = []  # the OrtValues must live as long as the binding
        inputs = {"input_ids": self.ids, "seqlens_k": self.seqlens, "total_sequence_length": self.total,
                  "logits_index": self.index}
        if session.uses_positions:
            inputs["position_ids"] = self.positions
        for name, array in inputs.items():
            self._bind(name, array, output=False)
        self._bind("logits", self.logits, output=True)
        for past, present, view in zip(session._past, session._present, session.cache.views(start, stop)):
            value = self._bind(past, view, output=False)
            self.io.bind_ortvalue_output(present, value)

    def _bind(self, name: str, array: np.ndarray, output: bool) -> ort.OrtValue:
        value = ort.OrtValue.ortvalue_from_numpy(array)
        self._values.append(value)
        (self.io.bind_ortvalue_output if output else self.io.bind_ortvalue_input)(name, value)
        return value
