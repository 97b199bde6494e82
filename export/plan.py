"""`glotta export plan`: the source talk's "executive math" for serving a GPT.

Weights: parameters × bytes per weight (fp32 4, fp16 2, int8 1; 2:4 sparse fp16 keeps half the values plus 2-bit
indices, i.e. 2/2 + 2/16 bytes per original weight). KV cache: 2 (K and V) × layers × KV width × bytes per token, the
KV width being the hidden size, or key/value heads × head size with grouped query attention.
Minimum tensor-parallel size per GPU: the smallest power of two whose share of the weights plus the KV cache of the
requested batch fits in the usable fraction of the GPU's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3  # the talk's "325.96 GB" for 175 B fp16 weights is this unit: 350 × 10⁹ bytes
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "fp16 2:4": 1.0 + 2 / 16}
GPU_MEMORY_GIB = {"V100-16GB": 16, "V100-32GB": 32, "A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80,
                 "H200-141GB": 141}


def weights_gib(params: int) -> dict[str, float]:
    return {precision: params * b / GIB for precision, b in BYTES_PER_WEIGHT.items()}


def dense_kv_bytes_per_token(num_layers: int, hidden_size: int, bytes_per_value: float = 2.0) -> float:
    """K and V of every layer, for a model whose every head has its own keys and values (GPT)."""
    return 2 * num_layers * hidden_size * bytes_per_value


def min_tensor_parallel(total_gib_at_tp1: float, kv_gib: float, gpu_gib: float, usable: float = 0.9,
                        max_tp: int = 64) -> int | None:
    """Smallest power-of-two TP whose per-GPU share (weights and KV cache split across it) fits."""
    tp = 1
    while tp <= max_tp:
        if (total_gib_at_tp1 + kv_gib) / tp <= usable * gpu_gib:
            return tp
        tp *= 2
    return None


@dataclass
class ServingPlan:
    label: str
    parameters: int
    kv_bytes_per_token: float | None  # fp16; None when the model's layers are not known
    batch: int = 1
    seq_length: int = 2048
    usable: float = 0.9
    weights: dict[str, float] = field(init=False)  # GiB per precision
    kv_gib: float = field(init=False)
    min_tp: dict[str, dict[str, int | None]] = field(init=False)  # GPU → precision → minimum TP (None: over 64)

    def __post_init__(self) -> None:
        self.weights = weights_gib(self.parameters)
        per_token = self.kv_bytes_per_token or 0.0
        self.kv_gib = per_token * self.batch * self.seq_length / GIB
        self.min_tp = {gpu: {p: min_tensor_parallel(gib, self.kv_gib, mem, self.usable) for p, gib in self.weights.items()}
                       for gpu, mem in GPU_MEMORY_GIB.items()}


def plan_architecture(label: str, arch, **sizing) -> ServingPlan:
    """The plan of a model whose architecture is known (glotta.modeling.spec.Architecture); `sizing`: batch,
    seq_length, usable."""
    return ServingPlan(f"{label} ({arch.n_layer} × {arch.n_embd}, {arch.n_kv_head} KV heads)", arch.parameters(),
                       arch.kv_bytes_per_token(), **sizing)


def plan_checkpoint(source: str, **sizing) -> ServingPlan:
    from glotta.modeling.megatron_reader import architecture_of, checkpoint_args

    family, arch = architecture_of(checkpoint_args(source))
    return plan_architecture(f"{source}: {family}", arch, **sizing)


def plan_parameters(params: float, label: str | None = None, num_layers: int | None = None,
                    hidden_size: int | None = None, **sizing) -> ServingPlan:
    """A bare parameter count; `num_layers` and `hidden_size` give the KV cache."""
    kv = dense_kv_bytes_per_token(num_layers, hidden_size) if num_layers and hidden_size else None
    return ServingPlan(label or f"{params / 1e9:g} B parameters", int(params), kv, **sizing)
