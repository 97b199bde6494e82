"""Read Megatron GPT checkpoints (GPT-2 or Llama family, shape.py) into one canonical, unsharded set of weights.

Handles the legacy layout (`model.language_model.{embedding, encoder|transformer}`, `self_attention` or `attention`,
`input_layernorm` or `input_norm`) and the Megatron-core layout (`decoder.layers.N.self_attention.linear_qkv`,
TE-fused layer norms included), tensor-parallel shards (`mp_rank_00`, `mp_rank_01`, …) and pipeline stages
(`mp_rank_XX_YYY`), the three fused-QKV row orders of checkpoint versions 0 / 1.0 / 2.0+, grouped query attention
(QKV rows per group: the group's query heads, then its key, then its value), SwiGLU's fc1 (each rank holds its own
[gate; up] halves), an untied output layer, and vocabulary padding. Anything else is refused with the reason.
Weights stay in Megatron's naming and orientation; hf.py turns them into a `transformers` model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .checkpoint import CheckpointError, iteration_dir, load
from .shape import GPTShape, shape_from_args

ROW_PARALLEL = ("proj_w", "fc2_w")  # split along the input dimension
COLUMN_PARALLEL = ("qkv_w", "qkv_b", "fc1_w", "fc1_b")  # split along the output dimension
LEGACY = {"input_layernorm.weight": "ln1_w", "input_layernorm.bias": "ln1_b",
          "query_key_value.weight": "qkv_w", "query_key_value.bias": "qkv_b", "dense.weight": "proj_w",
          "dense.bias": "proj_b", "post_attention_layernorm.weight": "ln2_w", "post_attention_layernorm.bias": "ln2_b",
          "dense_h_to_4h.weight": "fc1_w", "dense_h_to_4h.bias": "fc1_b", "dense_4h_to_h.weight": "fc2_w",
          "dense_4h_to_h.bias": "fc2_b", "input_norm.weight": "ln1_w", "input_norm.bias": "ln1_b",
          "post_attention_norm.weight": "ln2_w", "post_attention_norm.bias": "ln2_b"}
CORE = {"input_layernorm.weight": "ln1_w", "input_layernorm.bias": "ln1_b",
        "self_attention.linear_qkv.layer_norm_weight": "ln1_w", "self_attention.linear_qkv.layer_norm_bias": "ln1_b",
        "self_attention.linear_qkv.weight": "qkv_w", "self_attention.linear_qkv.bias": "qkv_b",
        "self_attention.linear_proj.weight": "proj_w", "self_attention.linear_proj.bias": "proj_b",
        "pre_mlp_layernorm.weight": "ln2_w", "pre_mlp_layernorm.bias": "ln2_b",
        "mlp.linear_fc1.layer_norm_weight": "ln2_w", "mlp.linear_fc1.layer_norm_bias": "ln2_b",
        "mlp.linear_fc1.weight": "fc1_w", "mlp.linear_fc1.bias": "fc1_b", "mlp.linear_fc2.weight": "fc2_w",
        "mlp.linear_fc2.bias": "fc2_b"}
NEEDED = {"gpt2": ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b", "fc2_w",
                   "fc2_b"),
          "llama": ("ln1_w", "qkv_w", "proj_w", "ln2_w", "fc1_w", "fc2_w")}


def _rank_files(it_dir: Path) -> dict[tuple[int, int], Path]:
    files = {}
    for d in sorted(it_dir.glob("mp_rank_*")):
        m = re.fullmatch(r"mp_rank_(\d+)(?:_(\d+))?", d.name)
        pt = next((p for p in (d / "model_optim_rng.pt", d / "model_rng.pt") if p.is_file()), None)
        if m and pt:
            files[(int(m.group(1)), int(m.group(2) or 0))] = pt
    if not files:
        raise CheckpointError(f"{it_dir}: no mp_rank_*/model_optim_rng.pt")
    return files


def _to_per_head(w: torch.Tensor, heads: int, version: float) -> torch.Tensor:
    """Fused QKV rows of one rank → (head, q/k/v, head_dim) order, the 2.0+ layout."""
    rows = w.shape[0]
    hn = rows // 3 // heads
    rest = w.shape[1:]
    if version < 1.0:  # [3, heads, hn]
        return w.reshape(3, heads, hn, *rest).transpose(0, 1).reshape(rows, *rest)
    if version < 2.0:  # [heads, hn, 3]
        return w.reshape(heads, hn, 3, *rest).transpose(1, 2).reshape(rows, *rest)
    return w


def canonical_rank(state: dict, heads_local: int, layer_offset: int) -> dict:
    version = float(state.get("checkpoint_version", 0))
    model = state["model"]
    out: dict = {}
    if "language_model" in model:  # legacy
        lm = model["language_model"]
        enc = lm.get("encoder") or lm.get("transformer")
        if enc is None:
            raise CheckpointError("language_model has neither `encoder` nor `transformer`")
        if "embedding" in lm:
            out["wte"] = lm["embedding"]["word_embeddings"]["weight"]
            if "position_embeddings" in lm["embedding"]:  # none with RoPE
                out["wpe"] = lm["embedding"]["position_embeddings"]["weight"]
        if "output_layer" in lm:
            out["lm_head"] = lm["output_layer"]["weight"]
        for key, value in enc.items():
            if key.startswith(("final_layernorm.", "final_norm.")):
                out["lnf_" + key.split(".")[-1][0]] = value
                continue
            m = re.fullmatch(r"layers\.(\d+)\.(?:self_attention|attention|mlp)\.(.+)|layers\.(\d+)\.(.+)", key)
            if not m:
                raise CheckpointError(f"unknown legacy key {key!r}")
            idx, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            if name in LEGACY:
                out[(int(idx) + layer_offset, LEGACY[name])] = value
    else:  # megatron-core
        for key, value in model.items():
            if key.startswith("_extra_state") or key.endswith("_extra_state"):
                continue
            if key == "embedding.word_embeddings.weight":
                out["wte"] = value
            elif key == "embedding.position_embeddings.weight":
                out["wpe"] = value
            elif key == "output_layer.weight":
                out["lm_head"] = value
            elif key.startswith("decoder.final_layernorm."):
                out["lnf_" + key.split(".")[-1][0]] = value
            else:
                m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", key)
                if not m or m.group(2) not in CORE:
                    raise CheckpointError(f"unknown megatron-core key {key!r}")
                out[(int(m.group(1)) + layer_offset, CORE[m.group(2)])] = value
    for k in list(out):
        if isinstance(k, tuple) and k[1] in ("qkv_w", "qkv_b"):
            out[k] = _to_per_head(out[k], heads_local, version)
    return out


def _args(state: dict):
    args = state.get("args")
    if args is None:
        raise CheckpointError("checkpoint has no `args`: cannot tell its shape or parallelism")
    return args


def checkpoint_args(path: str | Path):
    """The Megatron arguments (argparse.Namespace) a checkpoint was saved with, from its first rank's file."""
    return _args(load(next(iter(_rank_files(iteration_dir(path)).values()))))


def _model_shape(args, files: dict) -> GPTShape:
    """The shape the arguments describe, or the reason Glotta cannot read it."""
    try:
        shape = shape_from_args(args)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if shape.family == "llama":
        if float(getattr(args, "rotary_percent", 1.0) or 1.0) != 1.0:
            raise CheckpointError(f"--rotary-percent {args.rotary_percent}: partial rotary embeddings are not supported")
        if getattr(args, "rotary_interleaved", False):
            raise CheckpointError("--rotary-interleaved is not supported (Hugging Face Llama rotates halves)")
        if getattr(args, "use_rope_scaling", False):  # Megatron's Llama 3.1 scaling, its fixed constants
            shape.rope_scaling = {"rope_type": "llama3", "factor": float(getattr(args, "rope_scaling_factor", 8.0)),
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192}
    shape.tp = max(t for t, _ in files) + 1
    shape.pp = max(p for _, p in files) + 1
    if shape.heads % shape.tp or shape.layers % shape.pp or shape.heads % shape.groups:
        raise CheckpointError(f"{shape.heads} heads / {shape.groups} query groups / {shape.layers} layers do not "
                              f"split over TP {shape.tp} × PP {shape.pp}")
    if shape.groups % shape.tp:
        raise CheckpointError(f"{shape.groups} query groups over TP {shape.tp}: replicated KV heads are not supported")
    return shape


def _merge(name: str, shards: list[torch.Tensor], tp: int, family: str) -> torch.Tensor:
    if name == "fc1_w" and family == "llama":  # every rank holds [its gate rows; its up rows]
        halves = [s.chunk(2, dim=0) for s in shards[:tp]]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    if name in COLUMN_PARALLEL or name in ("wte", "lm_head"):
        return torch.cat(shards[:tp], dim=0)
    if name in ROW_PARALLEL:
        return torch.cat(shards[:tp], dim=1)
    return shards[0]


def read(path: str | Path, vocab_size: int | None = None) -> tuple[dict, GPTShape]:
    """(canonical unsharded weights, model shape) of a checkpoint; `vocab_size` removes the vocabulary padding."""
    files = _rank_files(iteration_dir(path))
    first = load(next(iter(files.values())))
    shape = _model_shape(_args(first), files)
    shape.version = float(first.get("checkpoint_version", 0))
    if shape.groups != shape.heads and shape.version < 2.0:
        raise CheckpointError(f"checkpoint_version {shape.version} predates grouped query attention")
    tp, pp, layers = shape.tp, shape.pp, shape.layers
    ranks = {}
    for (t, p), f in files.items():
        state = first if (t, p) == next(iter(files)) else load(f)
        ranks[(t, p)] = canonical_rank(state, shape.heads // tp, p * layers // pp)
    merged: dict = {}
    for key in {k for r in ranks.values() for k in r}:
        shards = [ranks[(t, p)][key] for p in range(pp) for t in range(tp) if key in ranks[(t, p)]]
        merged[key] = _merge(key[1] if isinstance(key, tuple) else key, shards, tp, shape.family)
    for i in range(layers):
        missing = sorted(n for n in NEEDED[shape.family] if (i, n) not in merged)
        if missing:
            raise CheckpointError(f"layer {i} lacks {missing}")
    needed = ("wte", "wpe", "lnf_w", "lnf_b") if shape.family == "gpt2" else ("wte", "lnf_w")
    needed += () if shape.tied else ("lm_head",)
    for key in needed:
        if key not in merged:
            raise CheckpointError(f"no {key} in the checkpoint")
    if vocab_size:
        merged["wte"] = merged["wte"][:vocab_size]
        if "lm_head" in merged:
            merged["lm_head"] = merged["lm_head"][:vocab_size]
    shape.vocab = merged["wte"].shape[0]
    fc1 = merged[(0, "fc1_w")].shape[0]
    shape.ffn = fc1 // 2 if shape.family == "llama" else fc1
    if "wpe" in merged:
        shape.positions = merged["wpe"].shape[0]
    return merged, shape
