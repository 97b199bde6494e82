"""A plain ONNX Runtime runner for exchange graphs (the torch-exported GPT with `past_key_values` inputs).

The engine serves the fused decoder graph (decoder_session.py); this runner reads the graphs that the GPU builders
take (TensorRT, ONNX checks), so that their logits can be compared with what the engine computes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .decoder_session import session_options


class OnnxCausalLM:
    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        so = session_options(threads or os.cpu_count() or 1)
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

    def prefill(self, prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run left-padded prompts from an empty cache; returns logits [b, L, V] and the present cache."""
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), pad_id, np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = p
            mask[i, width - len(p) :] = 1
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        return self.forward(ids, mask, positions, self.empty_past(len(prompts)))
