"""Megatron-LM's legacy checkpoint layout for a GPT trained locally (one tensor- and pipeline-parallel rank):

    SAVE/latest_checkpointed_iteration.txt                 "100"
    SAVE/iter_0000100/mp_rank_00/model_optim_rng.pt         {"args", "checkpoint_version": 3.0, "iteration",
                                                             "model": {"language_model": {"embedding", "encoder"}},
                                                             "optimizer", "opt_param_scheduler", "rng_state"}

The model is a `transformers` GPT-2 with exact GELU (Megatron's default). Conversion both ways: Conv1D weights are
transposed to Megatron's [out, in], and the fused QKV rows are ordered per head (head, q/k/v, head_dim), as
checkpoint_version 3.0 expects.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

CHECKPOINT_VERSION = 3.0


def _qkv_to_megatron(w: torch.Tensor, heads: int) -> torch.Tensor:
    """HF c_attn [h, 3h] (columns q|k|v, each head-major) → Megatron [3h, h] (rows head, q/k/v, head_dim)."""
    three_h = w.shape[-1]
    hn = three_h // 3 // heads
    t = w.T if w.dim() == 2 else w
    t = t.reshape(3, heads, hn, *t.shape[1:]).transpose(0, 1)
    return t.reshape(three_h, *t.shape[3:]).contiguous()


def _qkv_from_megatron(w: torch.Tensor, heads: int) -> torch.Tensor:
    three_h = w.shape[0]
    hn = three_h // 3 // heads
    t = w.reshape(heads, 3, hn, *w.shape[1:]).transpose(0, 1).reshape(three_h, *w.shape[1:])
    return (t.T if t.dim() == 2 else t).contiguous()


def to_megatron(model) -> dict:
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    enc = {}
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        m = f"layers.{i}."
        enc[m + "input_layernorm.weight"] = sd[p + "ln_1.weight"]
        enc[m + "input_layernorm.bias"] = sd[p + "ln_1.bias"]
        enc[m + "self_attention.query_key_value.weight"] = _qkv_to_megatron(sd[p + "attn.c_attn.weight"], cfg.n_head)
        enc[m + "self_attention.query_key_value.bias"] = _qkv_to_megatron(sd[p + "attn.c_attn.bias"], cfg.n_head)
        enc[m + "self_attention.dense.weight"] = sd[p + "attn.c_proj.weight"].T.contiguous()
        enc[m + "self_attention.dense.bias"] = sd[p + "attn.c_proj.bias"]
        enc[m + "post_attention_layernorm.weight"] = sd[p + "ln_2.weight"]
        enc[m + "post_attention_layernorm.bias"] = sd[p + "ln_2.bias"]
        enc[m + "mlp.dense_h_to_4h.weight"] = sd[p + "mlp.c_fc.weight"].T.contiguous()
        enc[m + "mlp.dense_h_to_4h.bias"] = sd[p + "mlp.c_fc.bias"]
        enc[m + "mlp.dense_4h_to_h.weight"] = sd[p + "mlp.c_proj.weight"].T.contiguous()
        enc[m + "mlp.dense_4h_to_h.bias"] = sd[p + "mlp.c_proj.bias"]
    enc["final_layernorm.weight"] = sd["transformer.ln_f.weight"]
    enc["final_layernorm.bias"] = sd["transformer.ln_f.bias"]
    embedding = {"word_embeddings": {"weight": sd["transformer.wte.weight"]},
                 "position_embeddings": {"weight": sd["transformer.wpe.weight"]}}
    return {"language_model": {"embedding": embedding, "encoder": enc}}


def from_megatron(lm: dict, model) -> None:
    """Load Megatron `model["language_model"]` weights into a GPT-2 model of the same shape (in place)."""
    cfg = model.config
    enc, emb = lm["encoder"], lm["embedding"]
    sd = {"transformer.wte.weight": emb["word_embeddings"]["weight"],
          "transformer.wpe.weight": emb["position_embeddings"]["weight"],
          "transformer.ln_f.weight": enc["final_layernorm.weight"], "transformer.ln_f.bias": enc["final_layernorm.bias"]}
    for i in range(cfg.n_layer):
        p, m = f"transformer.h.{i}.", f"layers.{i}."
        sd[p + "ln_1.weight"] = enc[m + "input_layernorm.weight"]
        sd[p + "ln_1.bias"] = enc[m + "input_layernorm.bias"]
        sd[p + "attn.c_attn.weight"] = _qkv_from_megatron(enc[m + "self_attention.query_key_value.weight"], cfg.n_head)
        sd[p + "attn.c_attn.bias"] = _qkv_from_megatron(enc[m + "self_attention.query_key_value.bias"], cfg.n_head)
        sd[p + "attn.c_proj.weight"] = enc[m + "self_attention.dense.weight"].T
        sd[p + "attn.c_proj.bias"] = enc[m + "self_attention.dense.bias"]
        sd[p + "ln_2.weight"] = enc[m + "post_attention_layernorm.weight"]
        sd[p + "ln_2.bias"] = enc[m + "post_attention_layernorm.bias"]
        sd[p + "mlp.c_fc.weight"] = enc[m + "mlp.dense_h_to_4h.weight"].T
        sd[p + "mlp.c_fc.bias"] = enc[m + "mlp.dense_h_to_4h.bias"]
        sd[p + "mlp.c_proj.weight"] = enc[m + "mlp.dense_4h_to_h.weight"].T
        sd[p + "mlp.c_proj.bias"] = enc[m + "mlp.dense_4h_to_h.bias"]
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model.load_state_dict(sd)


def save(save_dir: str | Path, iteration: int, model, args: argparse.Namespace, optimizer: dict, scheduler: dict,
         rng_state: dict) -> Path:
    """Write iteration `iteration` and then point latest_checkpointed_iteration.txt at it (both atomically)."""
    save_dir = Path(save_dir)
    path = save_dir / f"iter_{iteration:07d}" / "mp_rank_00" / "model_optim_rng.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"args": args, "checkpoint_version": CHECKPOINT_VERSION, "iteration": iteration,
             "model": to_megatron(model), "optimizer": optimizer, "opt_param_scheduler": scheduler,
             "rng_state": [rng_state]}
    torch.save(state, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)
    tracker = save_dir / "latest_checkpointed_iteration.txt"
    tracker.with_suffix(".tmp").write_text(str(iteration))
    os.replace(tracker.with_suffix(".tmp"), tracker)
    return path


def latest(save_dir: str | Path) -> Path | None:
    tracker = Path(save_dir) / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        return None
    it = int(tracker.read_text().strip())
    return Path(save_dir) / f"iter_{it:07d}" / "mp_rank_00" / "model_optim_rng.pt"


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)  # our own file: it holds an argparse Namespace
