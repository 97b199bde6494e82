"""The shape of a Megatron GPT, as read from a checkpoint or a training configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def gpt_parameters(layers: int, hidden: int, vocab: int, positions: int) -> int:
    """GPT parameters: per layer 12h² + 13h (QKV, projection, 4h MLP, biases, 2 layer norms), embeddings, final LN."""
    return layers * (12 * hidden * hidden + 13 * hidden) + vocab * hidden + positions * hidden + 2 * hidden


@dataclass
class GPTShape:
    layers: int
    hidden: int
    heads: int
    vocab: int  # rows of the embedding (padding removed when the true vocabulary was given)
    positions: int
    ffn: int = 0  # MLP width (4h for GPT-2)
    tp: int = 1  # tensor-parallel ranks of the checkpoint
    pp: int = 1  # pipeline stages of the checkpoint
    version: float = 3.0  # checkpoint_version (fused-QKV row order)
    args: Any = None  # the checkpoint's Megatron arguments (argparse.Namespace)

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads

    @property
    def parameters(self) -> int:
        return gpt_parameters(self.layers, self.hidden, self.vocab, self.positions)

    def summary(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "args"}
