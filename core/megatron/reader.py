"""Read Megatron GPT checkpoints into one canonical, unsharded set of weights (and a `transformers` GPT-2).

Handles the legacy layout (`model.language_model.{embedding, encoder|transformer}`, `self_attention` or `attention`)
and the Megatron-core layout (`decoder.layers.N.self_attention.linear_qkv`, TE-fused layer norms included), tensor-
parallel shards (`mp_rank_00`, `mp_rank_01`, …) and pipeline stages (`mp_rank_XX_YYY`), the three fused-QKV row orders
of checkpoint versions 0 / 1.0 / 2.0+, and vocabulary padding. Anything else is refused with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .checkpoint import CheckpointError, iteration_dir, load
from .shape import GPTShape

ROW_PARALLEL = ("proj_w", "fc2_w")  # split along the input dimension
COLUMN_PARALLEL = ("qkv_w", "qkv_b", "fc1_w", "fc1_b")  # split along the output dimension
LEGACY = {"input_layernorm.weight": "ln1_w", "input_layernorm.bias": "ln1_b",
          "query_key_value.weight": "qkv_w", "query_key_value.bias": "qkv_b", "dense.weight": "proj_w",
          "dense.bias": "proj_b", "post_attention_layernorm.weight": "ln2_w", "post_attention_layernorm.bias": "ln2_b",
          "dense_h_to_4h.weight": "fc1_w", "dense_h_to_4h.bias": "fc1_b", "dense_4h_to_h.weight": "fc2_w",
          "dense_4h_to_h.bias": "fc2_b"}
CORE = {"input_layernorm.weight": "ln1_w", "input_layernorm.bias": "ln1_b",
        "self_attention.linear_qkv.layer_norm_weight": "ln1_w", "self_attention.linear_qkv.layer_norm_bias": "ln1_b",
        "self_attention.linear_qkv.weight": "qkv_w", "self_attention.linear_qkv.bias": "qkv_b",
        "self_attention.linear_proj.weight": "proj_w", "self_attention.linear_proj.bias": "proj_b",
        "pre_mlp_layernorm.weight": "ln2_w", "pre_mlp_layernorm.bias": "ln2_b",
        "mlp.linear_fc1.layer_norm_weight": "ln2_w", "mlp.linear_fc1.layer_norm_bias": "ln2_b",
        "mlp.linear_fc1.weight": "fc1_w", "mlp.linear_fc1.bias": "fc1_b", "mlp.linear_fc2.weight": "fc2_w",
        "mlp.linear_fc2.bias": "fc2_b"}


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
            out["wpe"] = lm["embedding"]["position_embeddings"]["weight"]
        if "output_layer" in lm:
            out["lm_head"] = lm["output_layer"]["weight"]
        for key, value in enc.items():
            if key.startswith("final_layernorm."):
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


def read(path: str | Path, vocab_size: int | None = None) -> tuple[dict, GPTShape]:
    """(canonical unsharded weights, model shape) of a checkpoint; `vocab_size` removes the vocabulary padding."""
    files = _rank_files(iteration_dir(path))
    first = load(next(iter(files.values())))
    args = _args(first)
    tp = max(t for t, _ in files) + 1
    pp = max(p for _, p in files) + 1
    layers, heads = args.num_layers, args.num_attention_heads
    if heads % tp or layers % pp:
        raise CheckpointError(f"{heads} heads / {layers} layers do not split over TP {tp} × PP {pp}")
    ranks = {}
    for (t, p), f in files.items():
        state = first if (t, p) == next(iter(files)) else load(f)
        ranks[(t, p)] = canonical_rank(state, heads // tp, p * layers // pp)
    merged: dict = {}
    for key in {k for r in ranks.values() for k in r}:
        shards = [ranks[(t, p)][key] for p in range(pp) for t in range(tp) if key in ranks[(t, p)]]
        name = key[1] if isinstance(key, tuple) else key
        if name in COLUMN_PARALLEL or name in ("wte", "lm_head"):
            merged[key] = torch.cat(shards[:tp], dim=0)
        elif name in ROW_PARALLEL:
            merged[key] = torch.cat(shards[:tp], dim=1)
        else:
            merged[key] = shards[0]
    names = {"ln1_w", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b", "fc2_w",
             "fc2_b"}
    for i in range(layers):
        missing = sorted(n for n in names if (i, n) not in merged)
        if missing:
            raise CheckpointError(f"layer {i} lacks {missing}")
    for key in ("wte", "wpe", "lnf_w", "lnf_b"):
        if key not in merged:
            raise CheckpointError(f"no {key} in the checkpoint")
    if vocab_size:
        merged["wte"] = merged["wte"][:vocab_size]
        if "lm_head" in merged:
            merged["lm_head"] = merged["lm_head"][:vocab_size]
    shape = GPTShape(layers=layers, hidden=args.hidden_size, heads=heads, vocab=merged["wte"].shape[0],
                     positions=merged["wpe"].shape[0], ffn=merged[(0, "fc1_w")].shape[0], tp=tp, pp=pp,
                     version=float(first.get("checkpoint_version", 0)), args=args)
    return merged, shape


def hf_state_dict(merged: dict, shape: GPTShape) -> dict:
    """Canonical weights → a `transformers` GPT-2 state dict (tied output unless the checkpoint has its own)."""
    h, heads = shape.hidden, shape.heads
    hn = h // heads

    def qkv(w: torch.Tensor) -> torch.Tensor:  # (head, q/k/v, hn) rows → HF c_attn columns q | k | v
        t = w.reshape(heads, 3, hn, *w.shape[1:]).transpose(0, 1).reshape(3 * h, *w.shape[1:])
        return t.T if t.dim() == 2 else t

    sd = {"transformer.wte.weight": merged["wte"], "transformer.wpe.weight": merged["wpe"],
          "transformer.ln_f.weight": merged["lnf_w"], "transformer.ln_f.bias": merged["lnf_b"],
          "lm_head.weight": merged.get("lm_head", merged["wte"])}
    for i in range(shape.layers):
        p = f"transformer.h.{i}."
        g = lambda n: merged[(i, n)]  # noqa: E731
        sd.update({p + "ln_1.weight": g("ln1_w"), p + "ln_1.bias": g("ln1_b"),
                   p + "attn.c_attn.weight": qkv(g("qkv_w")), p + "attn.c_attn.bias": qkv(g("qkv_b")),
                   p + "attn.c_proj.weight": g("proj_w").T, p + "attn.c_proj.bias": g("proj_b"),
                   p + "ln_2.weight": g("ln2_w"), p + "ln_2.bias": g("ln2_b"),
                   p + "mlp.c_fc.weight": g("fc1_w").T, p + "mlp.c_fc.bias": g("fc1_b"),
                   p + "mlp.c_proj.weight": g("fc2_w").T, p + "mlp.c_proj.bias": g("fc2_b")})
    return {k: v.float().contiguous() for k, v in sd.items()}


def to_hf(merged: dict, shape: GPTShape):
    """A `transformers` GPT2LMHeadModel holding the checkpoint's weights (exact GELU, as Megatron)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tied = "lm_head" not in merged or torch.equal(merged["lm_head"], merged["wte"])
    cfg = GPT2Config(vocab_size=shape.vocab, n_positions=shape.positions, n_embd=shape.hidden,
                     n_layer=shape.layers, n_head=shape.heads, activation_function="gelu",
                     tie_word_embeddings=tied)
    model = GPT2LMHeadModel(cfg)
    model.load_state_dict(hf_state_dict(merged, shape))
    return model.eval()
