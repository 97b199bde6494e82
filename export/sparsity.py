"""2:4 structured sparsity: prune by magnitude along the reduction dimension, verify any checkpoint or ONNX file.

In every group of 4 consecutive weights along the input (reduction) dimension at most 2 are non-zero — the pattern
Ampere/Hopper sparse tensor cores (and TensorRT's SPARSE_WEIGHTS) accelerate. Groups run along dim 0 of GPT-2 Conv1D
and ONNX MatMul weights ([in, out]) and along dim 1 of Megatron / nn.Linear weights ([out, in]). Embeddings and the
tied output layer are left dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SparsityReport:
    tensors: int = 0
    groups: int = 0
    bad_groups: int = 0
    zero_fraction: float = 0.0
    offenders: list[str] | None = None

    @property
    def ok(self) -> bool:
        return self.tensors > 0 and self.bad_groups == 0


def _groups(w: np.ndarray, dim: int) -> np.ndarray:
    """[n_groups, 4] view of the weight's groups of 4 along `dim`."""
    w = np.moveaxis(np.asarray(w), dim, -1)
    if w.shape[-1] % 4:
        raise ValueError(f"reduction dimension {w.shape[-1]} is not a multiple of 4")
    return w.reshape(-1, 4)


def prune_24(w, dim: int):
    """Keep the 2 largest-magnitude weights of each group of 4 along `dim` (torch tensor in, torch tensor out)."""
    import torch

    moved = w.movedim(dim, -1)
    g = moved.reshape(-1, 4)
    keep = g.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True)
    return (g * mask).reshape(moved.shape).movedim(-1, dim).contiguous()


def check(arrays: dict[str, tuple[np.ndarray, int]], zero_point: dict[str, float] | None = None) -> SparsityReport:
    report = SparsityReport(offenders=[])
    zeros = total = 0
    for name, (w, dim) in arrays.items():
        g = _groups(w.astype(np.float64) - (zero_point or {}).get(name, 0.0), dim)
        nonzero = (g != 0).sum(axis=1)
        bad = int((nonzero > 2).sum())
        report.tensors += 1
        report.groups += len(g)
        report.bad_groups += bad
        if bad:
            report.offenders.append(f"{name}: {bad}/{len(g)} groups")
        zeros += int((g == 0).sum())
        total += g.size
    report.zero_fraction = zeros / max(total, 1)
    return report


def sparsify_hf(model) -> int:
    """Prune every transformer-block matrix of a GPT-2 model in place; returns how many were pruned."""
    import torch

    n = 0
    with torch.no_grad():
        for block in model.transformer.h:
            for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                layer.weight.copy_(prune_24(layer.weight, 0))  # Conv1D: [in, out]
                n += 1
    return n


def hf_matrices(model) -> dict[str, tuple[np.ndarray, int]]:
    out = {}
    for i, block in enumerate(model.transformer.h):
        for name, layer in (("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                            ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)):
            out[f"h.{i}.{name}"] = (layer.weight.detach().numpy(), 0)
    return out


def onnx_matmul_weights(proto) -> dict:
    """{initializer name: (initializer, node)} of the block matrices of a GPT ONNX graph ([in, out] MatMul weights);
    the (tied) output projection [h, vocab] stays dense, whatever the exporter named it."""
    inits = {i.name: i for i in proto.graph.initializer}
    # fp16-stored weights reach their MatMul through a Cast to fp32
    cast_of = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Cast" and n.input[0] in inits}
    logits = next((o for o in proto.graph.output if o.name == "logits"), None)
    vocab = logits.type.tensor_type.shape.dim[-1].dim_value if logits is not None else -1
    out = {}
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "MatMulInteger") or len(node.input) < 2:
            continue
        name = cast_of.get(node.input[1], node.input[1])
        init = inits.get(name)
        if init is not None and len(init.dims) == 2 and init.dims[0] % 4 == 0 and vocab not in init.dims:
            out[name] = (init, node)
    return out


def sparsify_onnx(src: str | Path, dst: str | Path) -> int:
    """Prune the block matrices of an ONNX GPT 2:4 (fp16 or fp32 storage kept); returns how many were pruned."""
    import onnx
    import torch
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    weights = onnx_matmul_weights(proto)
    for init, _ in weights.values():
        w = numpy_helper.to_array(init)
        pruned = prune_24(torch.from_numpy(w.astype(np.float32)), 0).numpy().astype(w.dtype)
        init.CopyFrom(numpy_helper.from_array(pruned, init.name))
    onnx.save(proto, str(dst))
    return len(weights)


def verify_path(path: str | Path) -> SparsityReport:
    """Check a Megatron checkpoint directory or an ONNX file (fp32 MatMul weights, or int8 MatMulInteger weights
    after their zero point)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(path))
        arrays, zps = {}, {}
        for name, (init, node) in onnx_matmul_weights(proto).items():
            arrays[name] = (numpy_helper.to_array(init), 0)
            if node.op_type == "MatMulInteger" and len(node.input) > 3:
                zp = next((i for i in proto.graph.initializer if i.name == node.input[3]), None)
                if zp is not None:
                    zps[name] = float(np.asarray(numpy_helper.to_array(zp)).mean())
        return check(arrays, zps)
    from glotta.modeling.megatron_reader import read

    merged = read(path).merged
    arrays = {f"layers.{k[0]}.{k[1]}": (v.float().numpy(), 1) for k, v in merged.items()
              if isinstance(k, tuple) and k[1] in ("qkv_w", "proj_w", "fc1_w", "fc2_w")}
    return check(arrays)


def perplexity(model, prefix: str | Path, seq: int, max_samples: int = 64) -> float:
    """Perplexity on a Megatron .bin/.idx dataset: documents concatenated, cut into seq + 1 samples."""
    import math

    from glotta.core.megatron.indexed import MegatronDataset
    from glotta.modeling.perplexity import mean_loss, samples_of

    ds = MegatronDataset(prefix)
    samples = samples_of(ds, range(len(ds)), seq, max_samples)
    if not len(samples):
        raise ValueError(f"{prefix}: fewer than {seq + 1} tokens")
    return math.exp(mean_loss(model, samples))


@dataclass
class SparsifyReport:
    pruned: int  # matrices pruned 2:4
    check: SparsityReport
    perplexity_before: float | None
    perplexity_after: float | None


def sparsify_checkpoint(source: str | Path, output: str | Path, data_path: str | Path | None = None,
                        seq_length: int = 2048) -> SparsifyReport:
    """Prune every transformer matrix of a checkpoint 2:4 by magnitude (embeddings and the tied output stay dense),
    write the pruned checkpoint, and measure the validation perplexity before and after on `data_path`."""
    import argparse

    from glotta.core.errors import invalid
    from glotta.modeling.megatron_hf import save_checkpoint, to_hf
    from glotta.modeling.megatron_reader import read
    from glotta.modeling.registry import get

    ckpt = read(source)
    if get(ckpt.family).fastertransformer is not None:
        raise invalid(f"2:4 sparsity serves the FasterTransformer / TensorRT GPT path, which this {ckpt.family} "
                      "checkpoint cannot take", "source")
    model = to_hf(ckpt)
    before = perplexity(model, data_path, seq_length) if data_path else None
    pruned = sparsify_hf(model)
    after = perplexity(model, data_path, seq_length) if data_path else None
    a = ckpt.architecture
    args = argparse.Namespace(num_layers=a.n_layer, hidden_size=a.n_embd, num_attention_heads=a.n_head,
                              padded_vocab_size=a.vocab_size, max_position_embeddings=a.n_positions,
                              tensor_model_parallel_size=1, pipeline_model_parallel_size=1, sparsity="2:4")
    save_checkpoint(output, 1, model, args, {}, {}, {})
    return SparsifyReport(pruned, check(hf_matrices(model)), before, after)
