"""What the family modules share: reading sizes from Megatron arguments and Hugging Face configs, and tensor helpers.

The canonical weights the decoder graph takes (decoder_graph.py), all stored `x @ W` ([in, out]) so the graph never
transposes:

    embed [V, E]   pos_embed [P, E] (learned positions)   lm_head [E, V]   lnf.w / lnf.b
    layer i: ln1.w ln1.b  qkv.w [E, (N + 2 KV) D]  qkv.b  o.w [N D, E]  o.b  ln2.w ln2.b
             up.w [E, F] (gelu) or [E, 2 F] (swiglu: gate then up)  up.b  down.w [F, E]  down.b

Megatron's canonical names (megatron_reader.py) are `wte wpe lnf_w lnf_b lm_head` and per layer `ln1_w ln1_b qkv_w
qkv_b proj_w proj_b ln2_w ln2_b fc1_w fc1_b fc2_w fc2_b`, in Megatron's [out, in] orientation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Megatron-LM's --use-rope-scaling: Llama 3.1's rule with the constants megatron/core/models/common/embeddings/
# rope_utils.py fixes (only the factor is an argument)
MEGATRON_ROPE_SCALING = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}


def f32(state: dict, key: str) -> np.ndarray:
    return np.asarray(state[key], np.float32)


def f32_t(state: dict, key: str) -> np.ndarray:
    """A `nn.Linear` weight ([out, in]) as the graph stores it ([in, out])."""
    return np.ascontiguousarray(f32(state, key).T)


def megatron_sizes(args: Any) -> dict:
    """The Architecture sizes Megatron arguments give (the padded vocabulary: the reader trims it)."""
    h, heads = args.hidden_size, args.num_attention_heads
    groups = getattr(args, "num_query_groups", None) if getattr(args, "group_query_attention", False) else None
    eps = getattr(args, "norm_epsilon", None) or getattr(args, "layernorm_epsilon", None) or 1e-5
    sizes = dict(vocab_size=getattr(args, "padded_vocab_size", 0) or 0, n_layer=args.num_layers, n_embd=h,
                 n_head=heads, n_kv_head=groups or heads,
                 n_positions=getattr(args, "max_position_embeddings", None) or getattr(args, "seq_length", 0),
                 intermediate_size=getattr(args, "ffn_hidden_size", None) or 4 * h, norm_eps=float(eps),
                 tied_embeddings=not getattr(args, "untie_embeddings_and_output_weights", False))
    return sizes


def megatron_rope(args: Any) -> dict:
    """RoPE settings of Megatron arguments; partial or interleaved rotary embeddings are refused with the reason."""
    if float(getattr(args, "rotary_percent", 1.0) or 1.0) != 1.0:
        raise ValueError(f"--rotary-percent {args.rotary_percent}: partial rotary embeddings are not supported")
    if getattr(args, "rotary_interleaved", False):
        raise ValueError("--rotary-interleaved is not supported (Hugging Face's Llama rotates halves)")
    scaling = None
    if getattr(args, "use_rope_scaling", False):
        scaling = {**MEGATRON_ROPE_SCALING, "factor": float(getattr(args, "rope_scaling_factor", 8.0))}
    return {"rope_theta": float(getattr(args, "rotary_base", 10000) or 10000), "rope_scaling": scaling}


def megatron_position(args: Any) -> str:
    if getattr(args, "use_rotary_position_embeddings", False):
        return "rope"
    return getattr(args, "position_embedding_type", "learned_absolute")


def hf_rope(cfg: dict) -> dict:
    """RoPE settings of a config.json: transformers ≥ 5 writes `rope_parameters` {rope_theta, rope_type, ...},
    earlier ones `rope_theta` + `rope_scaling`."""
    rope = dict(cfg.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    return {"rope_theta": float(theta), "rope_scaling": scaling}


def hf_rope_config(rope_theta: float, rope_scaling: dict | None) -> dict:
    return {"rope_theta": rope_theta, "rope_scaling": rope_scaling}
