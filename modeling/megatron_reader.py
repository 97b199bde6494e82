"""Read Megatron GPT checkpoints (any registered family) into one canonical, unsharded set of weights.

Handles the legacy layout (`model.language_model.{embedding, encoder|transformer}`, `self_attention` or `attention`,
`input_layernorm` or `input_norm`) and the Megatron-core layout (`decoder.layers.N.self_attention.linear_qkv`,
TE-fused layer norms included), tensor-parallel shards (`mp_rank_00`, `mp_rank_01`, …) and pipeline stages
(`mp_rank_XX_YYY`), the three fused-QKV row orders of checkpoint versions 0 / 1.0 / 2.0+, grouped query attention
(QKV rows per group: the group's query heads, then its key, then its value), SwiGLU's fc1 (each rank holds its own
[gate; up] halves), q/k/v biases, an untied output layer, and vocabulary padding. Anything else is refused with the
reason. Which tensors a layer needs follows from the architecture's traits (spec.py), not from a family's name.
Weights stay in Megatron's naming and orientation; megatron_hf.py turns them into a `transformers` model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from glotta.core.megatron.checkpoint import CheckpointError, iteration_dir, load

from .registry import for_megatron
from .spec import Architecture

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


def needed(arch: Architecture) -> tuple[str, ...]:
    """The canonical tensors every layer of this architecture holds."""
    names = ["ln1_w", "qkv_w", "proj_w", "ln2_w", "fc1_w", "fc2_w"]
    names += ["ln1_b", "ln2_b"] if arch.norm == "layernorm" else []
    names += ["qkv_b"] if arch.qkv_bias else []
    names += ["proj_b"] if arch.out_bias else []
    names += ["fc1_b", "fc2_b"] if arch.mlp_bias else []
    return tuple(names)


@dataclass
class MegatronCheckpoint:
    """A checkpoint read whole: canonical weights, what the model is, and how the checkpoint was laid out."""

    merged: dict
    family: str
    architecture: Architecture
    args: Any  # its Megatron arguments (argparse.Namespace)
    tp: int = 1  # tensor-parallel ranks
    pp: int = 1  # pipeline stages
    version: float = 3.0  # checkpoint_version (fused-QKV row order)

    def summary(self) -> dict:
        return {"family": self.family, **vars(self.architecture), "tp": self.tp, "pp": self.pp,
                "version": self.version}


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


def architecture_of(args: Any, vocab: int | None = None) -> tuple[str, Architecture]:
    """(family, architecture) that Megatron arguments describe (the padded vocabulary unless `vocab` is given); what
    no family runs is a CheckpointError with the reason."""
    try:
        family = for_megatron(args)
        arch = family.from_megatron(args)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    return family.name, replace(arch, vocab_size=vocab) if vocab else arch


def _layout(args: Any, files: dict) -> tuple[str, Architecture, int, int]:
    family, arch = architecture_of(args)
    tp = max(t for t, _ in files) + 1
    pp = max(p for _, p in files) + 1
    if arch.n_head % tp or arch.n_layer % pp or arch.n_head % arch.n_kv_head:
        raise CheckpointError(f"{arch.n_head} heads / {arch.n_kv_head} query groups / {arch.n_layer} layers do not "
                              f"split over TP {tp} × PP {pp}")
    if arch.n_kv_head % tp:
        raise CheckpointError(f"{arch.n_kv_head} query groups over TP {tp}: replicated KV heads are not supported")
    return family, arch, tp, pp


def _merge(name: str, shards: list[torch.Tensor], tp: int, gated: bool) -> torch.Tensor:
    if name in ("fc1_w", "fc1_b") and gated:  # every rank holds [its gate rows; its up rows]
        halves = [s.chunk(2, dim=0) for s in shards[:tp]]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    if name in COLUMN_PARALLEL or name in ("wte", "lm_head"):
        return torch.cat(shards[:tp], dim=0)
    if name in ROW_PARALLEL:
        return torch.cat(shards[:tp], dim=1)
    return shards[0]


def read(path: str | Path, vocab_size: int | None = None) -> MegatronCheckpoint:
    """A checkpoint's canonical unsharded weights and architecture; `vocab_size` removes the vocabulary padding."""
    files = _rank_files(iteration_dir(path))
    first = load(next(iter(files.values())))
    args = _args(first)
    family, arch, tp, pp = _layout(args, files)
    version = float(first.get("checkpoint_version", 0))
    if arch.n_kv_head != arch.n_head and version < 2.0:
        raise CheckpointError(f"checkpoint_version {version} predates grouped query attention")
    layers = arch.n_layer
    ranks = {}
    for (t, p), f in files.items():
        state = first if (t, p) == next(iter(files)) else load(f)
        ranks[(t, p)] = canonical_rank(state, arch.n_head // tp, p * layers // pp)
    merged: dict = {}
    gated = arch.mlp == "swiglu"
    for key in {k for r in ranks.values() for k in r}:
        shards = [ranks[(t, p)][key] for p in range(pp) for t in range(tp) if key in ranks[(t, p)]]
        merged[key] = _merge(key[1] if isinstance(key, tuple) else key, shards, tp, gated)
    for i in range(layers):
        missing = sorted(n for n in needed(arch) if (i, n) not in merged)
        if missing:
            raise CheckpointError(f"layer {i} lacks {missing}")
    top = ("wte", "lnf_w") + (("lnf_b",) if arch.norm == "layernorm" else ()) + \
        (("wpe",) if arch.positions == "learned" else ()) + (() if arch.tied_embeddings else ("lm_head",))
    for key in top:
        if key not in merged:
            raise CheckpointError(f"no {key} in the checkpoint")
    if vocab_size:
        merged["wte"] = merged["wte"][:vocab_size]
        if "lm_head" in merged:
            merged["lm_head"] = merged["lm_head"][:vocab_size]
    fc1 = merged[(0, "fc1_w")].shape[0]
    arch = replace(arch, vocab_size=merged["wte"].shape[0], intermediate_size=fc1 // 2 if gated else fc1,
                   n_positions=merged["wpe"].shape[0] if "wpe" in merged else arch.n_positions)
    return MegatronCheckpoint(merged, family, arch, args, tp, pp, version)
