"""ONNX Runtime session for a GPT with KV cache, and the batched cache that continuous batching reshapes.

Rows join (after their prefill) and leave (when finished or cancelled) between decoding steps. Rows have different
lengths, so the cache is left-padded: every row's newest token sits in the last column, the attention mask hides the
padding, and position ids count only real tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


class OnnxCausalLM:
    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if os.environ.get("GLOTTA_ORT_SPIN", "1") == "0":  # spinning threads: faster, but busy between steps
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if not self.past_names or self.output_names[0] != "logits":
            raise ValueError(f"{path}: not a GPT graph with KV cache (inputs {list(inputs)})")
        _, self.n_head, _, self.head_dim = inputs[self.past_names[0]].shape
        self.vocab_size = self.session.get_outputs()[0].shape[-1]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.n_head, 0, self.head_dim), np.float32) for _ in self.past_names]

    def forward(
        self, input_ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(self.past_names, past))
        out = self.session.run(self.output_names, feeds)
        return out[0], out[1:]

    def prefill(self, prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, "KVBatch"]:
        """Run left-padded prompts from an empty cache; returns logits [b, L, V] and their cache."""
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), pad_id, np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = p
            mask[i, width - len(p) :] = 1
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        logits, present = self.forward(ids, mask, positions, self.empty_past(len(prompts)))
        lengths = np.array([len(p) for p in prompts], np.int64)
        return logits, KVBatch(present, mask, lengths)


@dataclass
class KVBatch:
    """Cache of the running rows: `past[j]` is [B, H, T, D]; `mask` [B, T]; `lengths` real tokens per row."""

    past: list[np.ndarray]
    mask: np.ndarray
    lengths: np.ndarray

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    def step(self, model: OnnxCausalLM, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row; returns next-token logits [B, V]."""
        b = self.size
        self.mask = np.concatenate([self.mask, np.ones((b, 1), np.int64)], axis=1)
        logits, self.past = model.forward(tokens.reshape(b, 1), self.mask, self.lengths.reshape(b, 1), self.past)
        self.lengths = self.lengths + 1
        return logits[:, -1, :]

    def merge(self, other: "KVBatch") -> "KVBatch":
        width = max(self.mask.shape[1], other.mask.shape[1])
        a, b = self._left_pad(width), other._left_pad(width)
        return KVBatch(
            [np.concatenate([x, y], axis=0) for x, y in zip(a.past, b.past)],
            np.concatenate([a.mask, b.mask], axis=0),
            np.concatenate([a.lengths, b.lengths]),
        )

    def keep(self, rows: list[int]) -> "KVBatch":
        """Only `rows`, in that order, with columns that no remaining row uses dropped."""
        idx = np.asarray(rows, np.int64)
        mask = self.mask[idx]
        used = np.flatnonzero(mask.any(axis=0))
        start = int(used[0]) if len(used) else mask.shape[1]
        return KVBatch(
            [np.ascontiguousarray(p[idx, :, start:, :]) for p in self.past], mask[:, start:].copy(), self.lengths[idx]
        )

    def _left_pad(self, width: int) -> "KVBatch":
        extra = width - self.mask.shape[1]
        if extra == 0:
            return self
        past = [np.pad(p, ((0, 0), (0, 0), (extra, 0), (0, 0))) for p in self.past]
        return KVBatch(past, np.pad(self.mask, ((0, 0), (extra, 0))), self.lengths)
