"""The shape of a Megatron GPT, as read from a checkpoint or a training configuration.

Two families, named by the Megatron arguments that make them:
- `gpt2`: Megatron's GPT default — learned absolute positions, LayerNorm, GELU MLP, biases, tied embeddings;
- `llama`: `--position-embedding-type rope --normalization RMSNorm --swiglu --disable-bias-linear`, usually with
  `--group-query-attention --num-query-groups N` and `--untie-embeddings-and-output-weights`.
A mixture of the two is not a model any Glotta engine (or FasterTransformer / TensorRT-LLM preset) runs: refused here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAMILIES = {
    "gpt2": "learned_absolute positions, LayerNorm, GELU, biases",
    "llama": "rope, RMSNorm, swiglu, no biases (--disable-bias-linear)",
}


def gpt_parameters(layers: int, hidden: int, vocab: int, positions: int) -> int:
    """GPT parameters: per layer 12h² + 13h (QKV, projection, 4h MLP, biases, 2 layer norms), embeddings, final LN."""
    return layers * (12 * hidden * hidden + 13 * hidden) + vocab * hidden + positions * hidden + 2 * hidden


def llama_parameters(layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int, tied: bool) -> int:
    """Llama parameters: per layer Q (h²), K and V (2·h·kv·d), output (h²), gate/up/down (3·h·ffn), 2 RMSNorm
    weights; embeddings, an untied head, the final norm."""
    d = hidden // heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_heads * d + 3 * hidden * ffn + 2 * hidden
    return layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden


def family_of(args: Any) -> str:
    """`gpt2` or `llama` from Megatron arguments (argparse.Namespace or a dict-like with getattr); a mixture is a
    ValueError that says which options disagree."""
    rope = getattr(args, "position_embedding_type", "learned_absolute") == "rope" or \
        bool(getattr(args, "use_rotary_position_embeddings", False))
    traits = {"rope": rope, "RMSNorm": getattr(args, "normalization", "LayerNorm") == "RMSNorm",
              "swiglu": bool(getattr(args, "swiglu", False)),
              "no biases": not getattr(args, "add_bias_linear", True)}
    if all(traits.values()):
        return "llama"
    if not any(traits.values()):
        return "gpt2"
    have = ", ".join(k for k, v in traits.items() if v)
    lack = ", ".join(k for k, v in traits.items() if not v)
    raise ValueError(f"a model with {have} but not {lack} is neither of the families Glotta serves: "
                     + "; ".join(f"{k} ({v})" for k, v in FAMILIES.items()))


@dataclass
class GPTShape:
    layers: int
    hidden: int
    heads: int
    vocab: int  # rows of the embedding (padding removed when the true vocabulary was given)
    positions: int
    ffn: int = 0  # MLP width (4h for GPT-2; gate and up each this wide for Llama)
    tp: int = 1  # tensor-parallel ranks of the checkpoint
    pp: int = 1  # pipeline stages of the checkpoint
    version: float = 3.0  # checkpoint_version (fused-QKV row order)
    args: Any = None  # the checkpoint's Megatron arguments (argparse.Namespace)
    family: str = "gpt2"
    kv_heads: int = 0  # key/value heads (query groups); 0: one per head
    tied: bool = True  # output layer shares the word embeddings
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Hugging Face's rope_scaling for Megatron's --use-rope-scaling

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads

    @property
    def groups(self) -> int:
        return self.kv_heads or self.heads

    @property
    def parameters(self) -> int:
        if self.family == "llama":
            return llama_parameters(self.layers, self.hidden, self.heads, self.groups, self.ffn, self.vocab, self.tied)
        return gpt_parameters(self.layers, self.hidden, self.vocab, self.positions)

    def summary(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "args"}


def shape_from_args(args: Any, vocab: int | None = None) -> GPTShape:
    """The shape Megatron arguments describe (the padded vocabulary unless `vocab` is given)."""
    family = family_of(args)
    h, heads = args.hidden_size, args.num_attention_heads
    groups = getattr(args, "num_query_groups", None) if getattr(args, "group_query_attention", False) else None
    ffn = getattr(args, "ffn_hidden_size", None) or 4 * h
    eps = getattr(args, "norm_epsilon", None) or getattr(args, "layernorm_epsilon", None) or 1e-5
    positions = getattr(args, "max_position_embeddings", None) or getattr(args, "seq_length", 0)
    return GPTShape(layers=args.num_layers, hidden=h, heads=heads, vocab=vocab or getattr(args, "padded_vocab_size", 0),
                    positions=positions, ffn=ffn, args=args, family=family,
                    kv_heads=groups or heads, tied=not getattr(args, "untie_embeddings_and_output_weights", False),
                    norm_eps=eps, rope_theta=float(getattr(args, "rotary_base", 10000) or 10000))
