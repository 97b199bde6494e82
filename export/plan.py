"""`glotta export plan`: the source talk's "executive math" for serving a GPT.

Weights: parameters × bytes per weight (fp32 4, fp16 2, int8 1; 2:4 sparse fp16 keeps half the values plus 2-bit
indices, i.e. 2/2 + 2/16 bytes per original weight). KV cache: 2 (K and V) × layers × KV width × bytes per token, the
KV width being the hidden size, or key/value heads × head size with grouped query attention.
Minimum tensor-parallel size per GPU: the smallest power of two whose share of the weights plus the KV cache of the
requested batch fits in the usable fraction of the GPU's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3  # the talk's "325.96 GB" for 175 B fp16 weights is this unit: 350 × 10⁹ bytes
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "fp16 2:4": 1.0 + 2 / 16}
GPU_MEMORY_GIB = {"V100-16GB": 16, "V100-32GB": 32, "A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80,
                 "H200-141GB": 141}


@dataclass
class ModelShape:
    parameters: int
    num_layers: int | None = None
    hidden_size: int | None = None
    kv_width: int | None = None  # key/value heads × head size (grouped query attention); None: the hidden size


def weights_gib(params: int) -> dict[str, float]:
    return {precision: params * b / GIB for precision, b in BYTES_PER_WEIGHT.items()}


def kv_bytes_per_token(shape: ModelShape, bytes_per_value: float = 2.0) -> float | None:
    if not (shape.num_layers and shape.hidden_size):
        return None
    return 2 * shape.num_layers * (shape.kv_width or shape.hidden_size) * bytes_per_value


def min_tensor_parallel(total_gib_at_tp1: float, kv_gib: float, gpu_gib: float, usable: float = 0.9,
                        max_tp: int = 64) -> int | None:
    """Smallest power-of-two TP whose per-GPU share (weights and KV cache split across it) fits."""
    tp = 1
    while tp <= max_tp:
        if (total_gib_at_tp1 + kv_gib) / tp <= usable * gpu_gib:
            return tp
        tp *= 2
    return None
