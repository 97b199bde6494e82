"""Megatron-LM's legacy checkpoint layout for a GPT trained locally (one tensor- and pipeline-parallel rank):

    SAVE/latest_checkpointed_iteration.txt                 "100"
    SAVE/iter_0000100/mp_rank_00/model_optim_rng.pt         {"args", "checkpoint_version": 3.0, "iteration",
                                                             "model": {"language_model": {"embedding", "encoder"}},
                                                             "optimizer", "opt_param_scheduler", "rng_state"}

The model is a `transformers` GPT-2 with exact GELU (Megatron's default). Writing transposes Conv1D weights to
Megatron's [out, in] and orders the fused QKV rows per head (head, q/k/v, head_dim), as checkpoint_version 3.0
expects; reading goes through glotta.export.megatron_reader, which reads every Megatron layout.
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
    """Load Megatron `model["language_model"]` weights into a GPT-2 model of the same shape (in place), through the
    checkpoint reader's one Megatron → Hugging Face mapping."""
    from glotta.export.megatron_reader import canonical_rank, hf_state_dict

    cfg = model.config
    merged = canonical_rank({"checkpoint_version": CHECKPOINT_VERSION, "model": {"language_model": lm}}, cfg.n_head, 0)
    model.load_state_dict(hf_state_dict(merged, {"layers": cfg.n_layer, "hidden": cfg.n_embd, "heads": cfg.n_head}))


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
