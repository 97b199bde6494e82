"""Llama (Hugging Face `LlamaForCausalLM`; Megatron-LM with `--position-embedding-type rope --normalization RMSNorm
--swiglu --disable-bias-linear`): RoPE with the config's theta and scaling, RMSNorm, SwiGLU, grouped key/value heads,
a tied or untied head, no biases (or q/k/v/o biases with `attention_bias`). CroissantLLM, Salamandra, EuroLLM and
Lucie are of this family; Qwen2 (qwen2.py) is this family plus q/k/v biases, so it reuses these maps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..registry import Family, TrtllmRecipe, register
from ..spec import Architecture
from .conversions import f32, f32_t, hf_rope, megatron_position, megatron_rope, megatron_sizes


def traits() -> Architecture:
    return Architecture(vocab_size=0, n_layer=0, n_embd=0, n_head=0, n_kv_head=0, n_positions=0, intermediate_size=0,
                        positions="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", qkv_bias=False, out_bias=False,
                        mlp_bias=False, tied_embeddings=False)


def hf_sizes(cfg: dict, base: Architecture) -> Architecture:
    """The sizes every Llama-shaped config.json spells the same way (Llama, Qwen2)."""
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (silu only)")
    if cfg.get("mlp_bias"):
        raise ValueError("mlp_bias is not supported")
    return replace(base, vocab_size=cfg["vocab_size"], n_layer=cfg["num_hidden_layers"], n_embd=cfg["hidden_size"],
                   n_head=cfg["num_attention_heads"],
                   n_kv_head=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                   n_positions=cfg.get("max_position_embeddings", 2048), intermediate_size=cfg["intermediate_size"],
                   head_dim=cfg.get("head_dim") or 0, norm_eps=cfg.get("rms_norm_eps", 1e-6),
                   tied_embeddings=bool(cfg.get("tie_word_embeddings", base.tied_embeddings)), **hf_rope(cfg))


def from_hf_config(cfg: dict) -> Architecture:
    bias = bool(cfg.get("attention_bias", False))  # q, k, v and o projections together
    return hf_sizes(cfg, replace(traits(), qkv_bias=bias, out_bias=bias))


def hf_config_sizes(arch: Architecture, eos: int | None, bos: int | None) -> dict:
    return {"vocab_size": arch.vocab_size, "hidden_size": arch.n_embd, "intermediate_size": arch.intermediate_size,
            "num_hidden_layers": arch.n_layer, "num_attention_heads": arch.n_head,
            "num_key_value_heads": arch.n_kv_head, "max_position_embeddings": arch.n_positions,
            "rms_norm_eps": arch.norm_eps, "rope_theta": arch.rope_theta, "rope_scaling": arch.rope_scaling,
            "tie_word_embeddings": arch.tied_embeddings, "hidden_act": "silu", "bos_token_id": bos,
            "eos_token_id": eos, **({"head_dim": arch.head_dim} if arch.head_dim else {})}


def to_hf_config(arch: Architecture, eos: int | None, bos: int | None) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **hf_config_sizes(arch, eos, bos),
            "attention_bias": arch.qkv_bias, "mlp_bias": False}


def megatron_llama_traits(args: Any) -> bool:
    """RoPE, RMSNorm, SwiGLU and no linear biases: the Llama shape (Qwen2 adds --add-qkv-bias)."""
    return (megatron_position(args) == "rope" and getattr(args, "normalization", "LayerNorm") == "RMSNorm"
            and bool(getattr(args, "swiglu", False)) and not getattr(args, "add_bias_linear", True))


def matches_megatron(args: Any) -> bool:
    return megatron_llama_traits(args) and not getattr(args, "add_qkv_bias", False)


def from_megatron(args: Any) -> Architecture:
    return replace(traits(), **megatron_sizes(args), **megatron_rope(args))


def hf_weights(state: dict, arch: Architecture) -> dict[str, np.ndarray]:
    """Canonical weights from a Llama-shaped state dict (nn.Linear weights are [out, in]: transposed here)."""
    w = {"embed": f32(state, "model.embed_tokens.weight"), "lnf.w": f32(state, "model.norm.weight")}
    w["lm_head"] = f32_t(state, "lm_head.weight") if "lm_head.weight" in state else np.ascontiguousarray(w["embed"].T)
    for i in range(arch.n_layer):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        w[f"{i}.qkv.w"] = np.concatenate([f32_t(state, a + f"{x}_proj.weight") for x in "qkv"], axis=1)
        if a + "q_proj.bias" in state:
            w[f"{i}.qkv.b"] = np.concatenate([f32(state, a + f"{x}_proj.bias") for x in "qkv"])
        w[f"{i}.o.w"] = f32_t(state, a + "o_proj.weight")
        if a + "o_proj.bias" in state:
            w[f"{i}.o.b"] = f32(state, a + "o_proj.bias")
        w[f"{i}.ln1.w"] = f32(state, p + "input_layernorm.weight")
        w[f"{i}.ln2.w"] = f32(state, p + "post_attention_layernorm.weight")
        w[f"{i}.up.w"] = np.concatenate([f32_t(state, p + "mlp.gate_proj.weight"),
                                         f32_t(state, p + "mlp.up_proj.weight")], axis=1)
        w[f"{i}.down.w"] = f32_t(state, p + "mlp.down_proj.weight")
    return w


def split_grouped_qkv(w, heads: int, groups: int):
    """Megatron's fused QKV rows [groups × (heads/groups + 2) × hn, ...] → q [heads·hn, ...], k and v [groups·hn, ...]
    (weights and biases alike)."""
    per = heads // groups
    hn = w.shape[0] // (groups * (per + 2))
    t = w.reshape(groups, per + 2, hn, *w.shape[1:])
    return (t[:, :per].reshape(heads * hn, *w.shape[1:]), t[:, per].reshape(groups * hn, *w.shape[1:]),
            t[:, per + 1].reshape(groups * hn, *w.shape[1:]))


def hf_state_from_megatron(merged: dict, arch: Architecture) -> dict:
    """Megatron's canonical weights → the LlamaForCausalLM (or Qwen2) state dict: grouped QKV rows split into q/k/v
    projections, SwiGLU's fc1 into gate (first half) and up (second half). Megatron's RoPE (not interleaved) rotates
    halves as Hugging Face's does, so no row is permuted."""
    sd = {"model.embed_tokens.weight": merged["wte"], "model.norm.weight": merged["lnf_w"],
          "lm_head.weight": merged.get("lm_head", merged["wte"])}
    for i in range(arch.n_layer):
        p = f"model.layers.{i}."
        q, k, v = split_grouped_qkv(merged[(i, "qkv_w")], arch.n_head, arch.n_kv_head)
        gate, up = merged[(i, "fc1_w")].chunk(2, dim=0)
        sd.update({p + "input_layernorm.weight": merged[(i, "ln1_w")],
                   p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                   p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": merged[(i, "proj_w")],
                   p + "post_attention_layernorm.weight": merged[(i, "ln2_w")],
                   p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": merged[(i, "fc2_w")]})
        if (i, "qkv_b") in merged:
            qb, kb, vb = split_grouped_qkv(merged[(i, "qkv_b")], arch.n_head, arch.n_kv_head)
            sd.update({p + "self_attn.q_proj.bias": qb, p + "self_attn.k_proj.bias": kb,
                       p + "self_attn.v_proj.bias": vb})
    return sd


def megatron_state(model) -> dict:
    """A Llama-shaped `transformers` model → Megatron-core's state dict (the local layer spec's names): QKV rows per
    query group (its query heads, its key, its value), fc1 = [gate; up]; q/k/v biases likewise when present."""
    import torch

    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    heads, groups = cfg.num_attention_heads, cfg.num_key_value_heads
    hn = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    out = {"embedding.word_embeddings.weight": sd["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": sd["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        out["output_layer.weight"] = sd["lm_head.weight"]

    def grouped(q, k, v):
        parts = [q.reshape(groups, heads // groups * hn, *q.shape[1:]), k.reshape(groups, hn, *k.shape[1:]),
                 v.reshape(groups, hn, *v.shape[1:])]
        return torch.cat(parts, dim=1).reshape(-1, *q.shape[1:]).contiguous()

    for i in range(cfg.num_hidden_layers):
        p, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        out[m + "input_layernorm.weight"] = sd[p + "input_layernorm.weight"]
        out[m + "self_attention.linear_qkv.weight"] = grouped(*(sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"))
        if p + "self_attn.q_proj.bias" in sd:
            out[m + "self_attention.linear_qkv.bias"] = grouped(*(sd[p + f"self_attn.{x}_proj.bias"] for x in "qkv"))
        out[m + "self_attention.linear_proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[m + "pre_mlp_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        out[m + "mlp.linear_fc2.weight"] = sd[p + "mlp.down_proj.weight"]
    return out


FT_REASON = ("FasterTransformer's GPT has learned positions, LayerNorm and a GELU MLP: it has no RoPE, RMSNorm, SwiGLU "
             "or grouped KV heads")

register(Family(
    name="llama", hf_architectures=("LlamaForCausalLM",), hf_model_type="llama", traits=traits,
    from_hf_config=from_hf_config, to_hf_config=to_hf_config, matches_megatron=matches_megatron,
    from_megatron=from_megatron, hf_weights=hf_weights, hf_state_from_megatron=hf_state_from_megatron,
    megatron_state=megatron_state,
    # tensorrt_llm/models/llama/model.py: LLaMAForCausalLM.from_hugging_face
    trtllm=TrtllmRecipe("LLaMAForCausalLM"), fastertransformer=FT_REASON,
    # transformers 5: models/llama/tokenization_llama.py
    hf_tokenizer=("LlamaTokenizer", {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    description="rope, RMSNorm, swiglu, no biases (--disable-bias-linear)"))
