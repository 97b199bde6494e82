"""Megatron-LM's legacy checkpoint layout, and its tracker file — the only code that reads or writes the tracker:

    SAVE/latest_checkpointed_iteration.txt                 "100" (or "release")
    SAVE/iter_0000100/mp_rank_00/model_optim_rng.pt         {"args", "checkpoint_version": 3.0, "iteration",
                                                             "model": {"language_model": {"embedding", "encoder"}},
                                                             "optimizer", "opt_param_scheduler", "rng_state"}

Writing takes a `transformers` GPT-2 (exact GELU, Megatron's default): Conv1D weights transposed to Megatron's
[out, in], fused QKV rows ordered per head (head, q/k/v, head_dim) as checkpoint_version 3.0 expects. A Llama
(LlamaForCausalLM) is written in the Megatron-core layout that `--use-mcore-models` trains and saves (`"model":
{"decoder.layers.N.self_attention.linear_qkv.weight", ...}`): QKV rows per query group (its query heads, its key,
its value), fc1 = [gate; up]. Reading any Megatron layout is `reader.read`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import atomic_write

CHECKPOINT_VERSION = 3.0
TRACKER = "latest_checkpointed_iteration.txt"


class CheckpointError(ValueError):
    pass


def is_checkpoint(save_dir: str | Path) -> bool:
    return (Path(save_dir) / TRACKER).is_file()


def iteration_dir(save_dir: str | Path) -> Path:
    """The folder of the iteration the tracker names (a folder of mp_rank_* is taken as it is)."""
    save_dir = Path(save_dir)
    tracker = save_dir / TRACKER
    if tracker.is_file():
        it = tracker.read_text().strip()
        return save_dir / ("release" if it == "release" else f"iter_{int(it):07d}")
    if any(save_dir.glob("mp_rank_*")):
        return save_dir
    raise CheckpointError(f"{save_dir}: no {TRACKER} and no mp_rank_* folders (not a Megatron checkpoint)")


def latest(save_dir: str | Path) -> Path | None:
    """The single-rank file of the latest iteration, or None when nothing was saved yet."""
    if not is_checkpoint(save_dir):
        return None
    return iteration_dir(save_dir) / "mp_rank_00" / "model_optim_rng.pt"


def _qkv_to_megatron(w, heads: int):
    """HF c_attn [h, 3h] (columns q|k|v, each head-major) → Megatron [3h, h] (rows head, q/k/v, head_dim)."""
    three_h = w.shape[-1]
    hn = three_h // 3 // heads
    t = w.T if w.dim() == 2 else w
    t = t.reshape(3, heads, hn, *t.shape[1:]).transpose(0, 1)
    return t.reshape(three_h, *t.shape[3:]).contiguous()


def _llama_to_megatron(model) -> dict:
    """LlamaForCausalLM → Megatron-core's state dict (the local layer spec's names)."""
    import torch

    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    heads, groups = cfg.num_attention_heads, cfg.num_key_value_heads
    hn = cfg.hidden_size // heads
    out = {"embedding.word_embeddings.weight": sd["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": sd["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        out["output_layer.weight"] = sd["lm_head.weight"]
    for i in range(cfg.num_hidden_layers):
        p, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        q, k, v = (sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv")
        qkv = torch.cat([q.reshape(groups, heads // groups * hn, -1), k.reshape(groups, hn, -1),
                         v.reshape(groups, hn, -1)], dim=1)
        out[m + "input_layernorm.weight"] = sd[p + "input_layernorm.weight"]
        out[m + "self_attention.linear_qkv.weight"] = qkv.reshape(-1, cfg.hidden_size).contiguous()
        out[m + "self_attention.linear_proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[m + "pre_mlp_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        out[m + "mlp.linear_fc2.weight"] = sd[p + "mlp.down_proj.weight"]
    return out


def to_megatron(model) -> dict:
    """A checkpoint's `model` entry: the legacy layout for a GPT-2, Megatron-core's for a Llama."""
    cfg = model.config
    if cfg.model_type == "llama":
        return _llama_to_megatron(model)
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


def from_megatron(state: dict, model) -> None:
    """Load a single-rank checkpoint's weights into a model of the same shape (in place), through the reader's one
    Megatron → Hugging Face mapping."""
    from .hf import hf_state_dict
    from .reader import canonical_rank
    from .shape import shape_from_args

    shape = shape_from_args(state["args"], model.config.vocab_size)
    merged = canonical_rank({"checkpoint_version": CHECKPOINT_VERSION, "model": state["model"]}, shape.heads, 0)
    model.load_state_dict(hf_state_dict(merged, shape))


def save(save_dir: str | Path, iteration: int, model, args: argparse.Namespace, optimizer: dict, scheduler: dict,
         rng_state: dict) -> Path:
    """Write iteration `iteration` and then point the tracker at it (both atomically)."""
    import torch

    save_dir = Path(save_dir)
    path = save_dir / f"iter_{iteration:07d}" / "mp_rank_00" / "model_optim_rng.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"args": args, "checkpoint_version": CHECKPOINT_VERSION, "iteration": iteration,
             "model": to_megatron(model), "optimizer": optimizer, "opt_param_scheduler": scheduler,
             "rng_state": [rng_state]}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, str(tmp))
    tmp.replace(path)
    atomic_write(save_dir / TRACKER, str(iteration))
    return path


def load(path: str | Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)  # a Megatron file: it holds an argparse Namespace
