"""Canonical Megatron weights (reader.py) → a `transformers` model: GPT2LMHeadModel or LlamaForCausalLM.

The one Megatron → Hugging Face mapping, used by every exporter and by the local trainer when it resumes. Megatron's
RoPE (not interleaved) rotates halves as Hugging Face's Llama does, so query and key rows need no permutation; the
grouped QKV rows (per group: its query heads, its key, its value) are split into q/k/v projections, SwiGLU's fc1 into
gate (first half) and up (second half).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .shape import GPTShape


def _gpt2_state_dict(merged: dict, shape: GPTShape) -> dict:
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
    return sd


def split_grouped_qkv(w: torch.Tensor, heads: int, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron's fused QKV rows [groups × (heads/groups + 2) × hn, h] → q [heads·hn, h], k and v [groups·hn, h]."""
    per = heads // groups
    hn = w.shape[0] // (groups * (per + 2))
    t = w.reshape(groups, per + 2, hn, -1)
    q = t[:, :per].reshape(heads * hn, -1)
    return q, t[:, per].reshape(groups * hn, -1), t[:, per + 1].reshape(groups * hn, -1)


def _llama_state_dict(merged: dict, shape: GPTShape) -> dict:
    sd = {"model.embed_tokens.weight": merged["wte"], "model.norm.weight": merged["lnf_w"],
          "lm_head.weight": merged.get("lm_head", merged["wte"])}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        q, k, v = split_grouped_qkv(merged[(i, "qkv_w")], shape.heads, shape.groups)
        gate, up = merged[(i, "fc1_w")].chunk(2, dim=0)
        sd.update({p + "input_layernorm.weight": merged[(i, "ln1_w")],
                   p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                   p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": merged[(i, "proj_w")],
                   p + "post_attention_layernorm.weight": merged[(i, "ln2_w")],
                   p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": merged[(i, "fc2_w")]})
    return sd


def hf_state_dict(merged: dict, shape: GPTShape) -> dict:
    """Canonical weights → the `transformers` state dict of the shape's family (fp32)."""
    sd = (_llama_state_dict if shape.family == "llama" else _gpt2_state_dict)(merged, shape)
    return {k: v.float().contiguous() for k, v in sd.items()}


def hf_config(shape: GPTShape, tied: bool):
    if shape.family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
                           num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                           num_key_value_heads=shape.groups, max_position_embeddings=shape.positions,
                           rms_norm_eps=shape.norm_eps, rope_theta=shape.rope_theta, rope_scaling=shape.rope_scaling,
                           tie_word_embeddings=tied, attention_bias=False, mlp_bias=False, hidden_act="silu")
    from transformers import GPT2Config

    return GPT2Config(vocab_size=shape.vocab, n_positions=shape.positions, n_embd=shape.hidden, n_layer=shape.layers,
                      n_head=shape.heads, n_inner=shape.ffn if shape.ffn != 4 * shape.hidden else None,
                      activation_function="gelu", layer_norm_epsilon=shape.norm_eps, tie_word_embeddings=tied)


def to_hf(merged: dict, shape: GPTShape, tokenizer: str | Path | None = None):
    """A `transformers` model holding the checkpoint's weights (exact GELU for GPT-2, as Megatron). With the model's
    tokenizer, its end-of-document token becomes the config's eos (and bos) id — what generate and TRT-LLM stop on."""
    from transformers import AutoModelForCausalLM

    tied = "lm_head" not in merged or torch.equal(merged["lm_head"], merged["wte"])
    cfg = hf_config(shape, tied)
    if tokenizer is not None:
        from glotta.core.tokenizer import Tokenizer

        cfg.bos_token_id = cfg.eos_token_id = Tokenizer(tokenizer).eod_id
    model = AutoModelForCausalLM.from_config(cfg)
    model.load_state_dict(hf_state_dict(merged, shape))
    return model.eval()
