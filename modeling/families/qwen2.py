"""Qwen2 (Hugging Face `Qwen2ForCausalLM`, Qwen2 and Qwen2.5; Megatron-LM with the Llama options plus
`--add-qkv-bias`): the Llama shape with biases on the query, key and value projections (none on the output
projection or the MLP), and, in the small sizes, a tied head — the shape of the small multilingual models many
localized teams start from. Sliding-window attention (`use_sliding_window`) is refused: the engine attends to the
whole context."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..registry import Family, TrtllmRecipe, register
from ..spec import Architecture
from . import llama


def traits() -> Architecture:
    return replace(llama.traits(), qkv_bias=True)


def from_hf_config(cfg: dict) -> Architecture:
    if cfg.get("use_sliding_window"):
        raise ValueError("use_sliding_window is not supported: the engine attends to the whole context")
    return llama.hf_sizes(cfg, traits())


def to_hf_config(arch: Architecture, eos: int | None, bos: int | None) -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **llama.hf_config_sizes(arch, eos, bos),
            "use_sliding_window": False}


def matches_megatron(args: Any) -> bool:
    return llama.megatron_llama_traits(args) and bool(getattr(args, "add_qkv_bias", False))


def from_megatron(args: Any) -> Architecture:
    return replace(llama.from_megatron(args), qkv_bias=True)


register(Family(
    name="qwen2", hf_architectures=("Qwen2ForCausalLM",), hf_model_type="qwen2", traits=traits,
    from_hf_config=from_hf_config, to_hf_config=to_hf_config, matches_megatron=matches_megatron,
    from_megatron=from_megatron, hf_weights=llama.hf_weights, hf_state_from_megatron=llama.hf_state_from_megatron,
    megatron_state=llama.megatron_state,
    # tensorrt_llm/models/qwen/model.py: QWenForCausalLM.from_hugging_face converts qwen, qwen2 and qwen2.5 (its
    # config's qwen_type from the HF model_type; q/k/v biases from the attention's qkv bias)
    trtllm=TrtllmRecipe("QWenForCausalLM"), fastertransformer=llama.FT_REASON,
    # transformers 5: models/qwen2/tokenization_qwen2.py
    hf_tokenizer=("Qwen2Tokenizer", {
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    description="rope, RMSNorm, swiglu, q/k/v biases only (--add-qkv-bias)"))
