"""GPT-2 (Hugging Face `GPT2LMHeadModel`; Megatron-LM's GPT default): learned absolute positions, LayerNorm with bias,
a GELU MLP, biases on every linear layer, a tied head. Also the family of the exchange ONNX graphs Glotta exports
(torch dynamo, `past_key_values` inputs) and of FasterTransformer's GPT."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..registry import Family, TrtllmRecipe, register
from ..spec import Architecture
from .conversions import f32, megatron_position, megatron_sizes

_LAYER = {"ln1.w": "ln_1.weight", "ln1.b": "ln_1.bias", "qkv.w": "attn.c_attn.weight", "qkv.b": "attn.c_attn.bias",
          "o.w": "attn.c_proj.weight", "o.b": "attn.c_proj.bias", "ln2.w": "ln_2.weight", "ln2.b": "ln_2.bias",
          "up.w": "mlp.c_fc.weight", "up.b": "mlp.c_fc.bias", "down.w": "mlp.c_proj.weight",
          "down.b": "mlp.c_proj.bias"}


def traits() -> Architecture:
    return Architecture(vocab_size=0, n_layer=0, n_embd=0, n_head=0, n_kv_head=0, n_positions=0, intermediate_size=0)


def from_hf_config(cfg: dict) -> Architecture:
    e = cfg["n_embd"]
    return replace(traits(), vocab_size=cfg["vocab_size"], n_layer=cfg["n_layer"], n_embd=e, n_head=cfg["n_head"],
                   n_kv_head=cfg["n_head"], n_positions=cfg["n_positions"],
                   intermediate_size=cfg.get("n_inner") or 4 * e,
                   norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
                   tied_embeddings=cfg.get("tie_word_embeddings", True))


def to_hf_config(arch: Architecture, eos: int | None, bos: int | None) -> dict:
    """GPT2LMHeadModel with the exact GELU Megatron trains with."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": arch.vocab_size,
            "n_positions": arch.n_positions, "n_embd": arch.n_embd, "n_layer": arch.n_layer, "n_head": arch.n_head,
            "n_inner": None if arch.intermediate_size == 4 * arch.n_embd else arch.intermediate_size,
            "activation_function": "gelu", "layer_norm_epsilon": arch.norm_eps,
            "tie_word_embeddings": arch.tied_embeddings, "bos_token_id": bos, "eos_token_id": eos}


def matches_megatron(args: Any) -> bool:
    return (megatron_position(args) == "learned_absolute" and getattr(args, "normalization", "LayerNorm") == "LayerNorm"
            and not getattr(args, "swiglu", False) and getattr(args, "add_bias_linear", True))


def from_megatron(args: Any) -> Architecture:
    return replace(traits(), **megatron_sizes(args))


def hf_weights(state: dict, arch: Architecture) -> dict[str, np.ndarray]:
    """Canonical weights from a GPT-2 state dict (with or without the `transformer.` prefix; Conv1D weights are
    already [in, out])."""
    prefix = "transformer." if "transformer.wpe.weight" in state else ""
    head = state.get("lm_head.weight")
    embed = state.get(prefix + "wte.weight", head)  # tied: an exporter may keep only one of the two names
    w = {"embed": np.asarray(embed, np.float32), "pos_embed": f32(state, prefix + "wpe.weight"),
         "lnf.w": f32(state, prefix + "ln_f.weight"), "lnf.b": f32(state, prefix + "ln_f.bias")}
    w["lm_head"] = np.ascontiguousarray((w["embed"] if head is None else np.asarray(head, np.float32)).T)
    for i in range(arch.n_layer):
        w |= {f"{i}.{ours}": f32(state, f"{prefix}h.{i}.{theirs}") for ours, theirs in _LAYER.items()}
    return w


def hf_state_from_megatron(merged: dict, arch: Architecture) -> dict:
    """Megatron's canonical weights (torch) → GPT2LMHeadModel's state dict: QKV rows (head, q/k/v, head_dim) become
    c_attn's q | k | v columns, and Megatron's [out, in] Linear weights HF's [in, out] Conv1D ones."""
    h, heads = arch.n_embd, arch.n_head
    hn = h // heads

    def qkv(w):
        t = w.reshape(heads, 3, hn, *w.shape[1:]).transpose(0, 1).reshape(3 * h, *w.shape[1:])
        return t.T if t.dim() == 2 else t

    sd = {"transformer.wte.weight": merged["wte"], "transformer.wpe.weight": merged["wpe"],
          "transformer.ln_f.weight": merged["lnf_w"], "transformer.ln_f.bias": merged["lnf_b"],
          "lm_head.weight": merged.get("lm_head", merged["wte"])}
    for i in range(arch.n_layer):
        p = f"transformer.h.{i}."
        g = lambda n: merged[(i, n)]  # noqa: E731
        sd.update({p + "ln_1.weight": g("ln1_w"), p + "ln_1.bias": g("ln1_b"),
                   p + "attn.c_attn.weight": qkv(g("qkv_w")), p + "attn.c_attn.bias": qkv(g("qkv_b")),
                   p + "attn.c_proj.weight": g("proj_w").T, p + "attn.c_proj.bias": g("proj_b"),
                   p + "ln_2.weight": g("ln2_w"), p + "ln_2.bias": g("ln2_b"),
                   p + "mlp.c_fc.weight": g("fc1_w").T, p + "mlp.c_fc.bias": g("fc1_b"),
                   p + "mlp.c_proj.weight": g("fc2_w").T, p + "mlp.c_proj.bias": g("fc2_b")})
    return sd


def _qkv_to_megatron(w, heads: int):
    """HF c_attn [h, 3h] (columns q|k|v, each head-major) → Megatron [3h, h] (rows head, q/k/v, head_dim)."""
    three_h = w.shape[-1]
    hn = three_h // 3 // heads
    t = w.T if w.dim() == 2 else w
    t = t.reshape(3, heads, hn, *t.shape[1:]).transpose(0, 1)
    return t.reshape(three_h, *t.shape[3:]).contiguous()


def megatron_state(model) -> dict:
    """GPT2LMHeadModel → Megatron-LM's legacy checkpoint layout (`language_model.{embedding, encoder}`), QKV rows per
    head as checkpoint_version 3.0 expects."""
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    enc = {}
    for i in range(cfg.n_layer):
        p, m = f"transformer.h.{i}.", f"layers.{i}."
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


register(Family(
    name="gpt2", hf_architectures=("GPT2LMHeadModel",), hf_model_type="gpt2", traits=traits,
    from_hf_config=from_hf_config, to_hf_config=to_hf_config, matches_megatron=matches_megatron,
    from_megatron=from_megatron, hf_weights=hf_weights, hf_state_from_megatron=hf_state_from_megatron,
    megatron_state=megatron_state,
    # tensorrt_llm/models/gpt/model.py: GPTForCausalLM.from_hugging_face (gpt_variant "gpt2")
    trtllm=TrtllmRecipe("GPTForCausalLM", (("gpt_variant", "gpt2"),)), fastertransformer=None,
    # transformers 5: models/gpt2/tokenization_gpt2.py
    hf_tokenizer=("GPT2Tokenizer", {
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
    description="learned_absolute positions, LayerNorm, GELU, biases", exchange=True,
    megatron_legacy=True))
