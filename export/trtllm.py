"""Megatron checkpoint → TensorRT-LLM engine: a Hugging Face GPT-2 folder, then TensorRT-LLM's own
`convert_checkpoint.py` and `trtllm-build` with flags checked here (TensorRT-LLM has no direct Megatron input).

The commands are written to `build.sh` so they can be read, kept and rerun inside the NGC TRT-LLM image; `--run`
runs them when `trtllm-build` is on PATH. Flag names are those of TensorRT-LLM's GPT example and build command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from glotta.core.megatron.shape import GPTShape

# decoderMaskedMultiheadAttention.cu: MMHA_SUPPORTED_HEAD_SIZES
TRTLLM_HEAD_SIZES = (32, 48, 64, 80, 96, 104, 112, 128, 144, 160, 192, 224, 256)
QUANT_FLAGS = {
    "fp16": [],
    "int8-wo": ["--use_weight_only", "--weight_only_precision", "int8"],
    "int4-wo": ["--use_weight_only", "--weight_only_precision", "int4"],
    "smoothquant": ["--smoothquant", "0.5", "--per_channel", "--per_token"],
}


@dataclass
class TrtllmPlan:
    hf_dir: Path
    checkpoint_dir: Path
    engine_dir: Path
    tp: int = 1
    quant: str = "fp16"
    sparse: bool = False
    max_batch: int = 64
    max_input_len: int = 1024
    max_seq_len: int = 2048
    tokens_per_block: int = 64
    int8_kv_cache: bool = False
    calib_dataset: str | None = None


def validate(plan: TrtllmPlan, shape: GPTShape) -> None:
    """Refuse what the TensorRT-LLM GPT path cannot build or run, with the reason."""
    h, heads = shape.hidden, shape.heads
    if h % heads or h // heads not in TRTLLM_HEAD_SIZES:
        raise ValueError(f"head size {h}/{heads} = {h / heads:g} is not supported by TensorRT-LLM's masked multi-head "
                         f"attention (supported: {', '.join(map(str, TRTLLM_HEAD_SIZES))})")
    if plan.quant not in QUANT_FLAGS:
        raise ValueError(f"--quant must be one of {', '.join(QUANT_FLAGS)}")
    if heads % plan.tp:
        raise ValueError(f"{heads} heads cannot be split over --tp {plan.tp}")
    if plan.max_seq_len > shape.positions:
        raise ValueError(f"--max-seq-len {plan.max_seq_len} exceeds the model's {shape.positions} positions")
    if plan.max_input_len >= plan.max_seq_len:
        raise ValueError("--max-input-len must be below --max-seq-len (room to generate)")
    if plan.quant == "smoothquant" and not plan.calib_dataset:
        raise ValueError("smoothquant calibrates activations: give --calib-dataset (a local dataset path; the default "
                         "'lambada' is a Hub download)")


def commands(plan: TrtllmPlan) -> list[list[str]]:
    convert = ["python", "${TRTLLM_GPT_EXAMPLE:-examples/gpt}/convert_checkpoint.py", "--model_dir", str(plan.hf_dir),
               "--dtype", "float16", "--tp_size", str(plan.tp), "--output_dir", str(plan.checkpoint_dir),
               *QUANT_FLAGS[plan.quant]]
    if plan.int8_kv_cache:
        convert.append("--int8_kv_cache")
    if plan.calib_dataset:
        convert += ["--calib_dataset", plan.calib_dataset]
    build = ["trtllm-build", "--checkpoint_dir", str(plan.checkpoint_dir), "--output_dir", str(plan.engine_dir),
             "--gemm_plugin", "auto", "--gpt_attention_plugin", "auto", "--context_fmha", "enable",
             "--remove_input_padding", "enable", "--kv_cache_type", "paged", "--tokens_per_block",
             str(plan.tokens_per_block), "--max_batch_size", str(plan.max_batch), "--max_input_len",
             str(plan.max_input_len), "--max_seq_len", str(plan.max_seq_len)]
    if plan.sparse:
        build.append("--weight_sparsity")
    return [convert, build]


def script(plan: TrtllmPlan) -> str:
    lines = ["#!/usr/bin/env bash", "# Written by `glotta export trtllm`; run inside the NGC TensorRT-LLM image.",
             "# TRTLLM_GPT_EXAMPLE: the folder of TensorRT-LLM's GPT example (examples/gpt, or",
             "# examples/models/core/gpt in newer releases).", "set -euo pipefail"]
    for cmd in commands(plan):
        # the example path keeps its ${...} default unquoted so the shell expands it
        lines.append(" ".join(c if c.startswith("${") else shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"
