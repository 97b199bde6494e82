"""Megatron checkpoint → TensorRT-LLM engine: a Hugging Face folder (GPT-2 or Llama), then TensorRT-LLM's own
`convert_checkpoint.py` (examples/gpt or examples/llama) and `trtllm-build` with flags checked here (TensorRT-LLM has
no direct Megatron input).

The commands are written to `build.sh` so they can be read, kept and rerun inside the NGC TRT-LLM image; `--run`
runs them when `trtllm-build` is on PATH. Flag names are those of TensorRT-LLM v0.14's `examples/gpt/
convert_checkpoint.py` and `tensorrt_llm/commands/build.py`. What that release does on its own, and why the script
says it explicitly:
- the GPT variant is guessed from the model folder's name: `--gpt_variant gpt2` (and the folder is named `hf-gpt2`);
- calibration (SmoothQuant and the INT8 KV cache) loads `--calib_dataset`, default `lambada` from the Hub; a local
  folder works only if its name contains `lambada` or `cnn_dailymail` (`load_calib_dataset` picks split and key from
  the name: lambada → split `validation`, key `text`). Offline, the export writes your texts as
  `calib/lambada/validation.jsonl` and points there;
- the examples are not in the image's working directory: build.sh looks in the usual places or takes
  `TRTLLM_GPT_EXAMPLE` / `TRTLLM_LLAMA_EXAMPLE`, and uses `python3`.
The Llama example takes the same quantization and calibration flags, reads grouped KV heads and an untied head from
config.json, and has no variant flag.
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
    calib_dataset: str | None = None  # a local JSONL(.gz) of texts (`text` field) for calibration
    family: str = "gpt2"  # gpt2 | llama: which TensorRT-LLM example converts it

    @property
    def example(self) -> str:
        return "gpt" if self.family == "gpt2" else "llama"

    @property
    def calibrates(self) -> bool:
        """TRT-LLM calibrates activations for SmoothQuant and for the INT8 KV cache."""
        return self.quant == "smoothquant" or self.int8_kv_cache

    @property
    def calib_dir(self) -> Path:
        """Where the export writes the calibration texts: a name `load_calib_dataset` recognizes (lambada)."""
        return self.hf_dir.parent / "calib" / "lambada"


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
    if plan.calibrates and not plan.calib_dataset:
        raise ValueError("smoothquant and --int8-kv-cache calibrate activations: give --calib-dataset FILE (local "
                         "JSONL with a `text` field; TensorRT-LLM's default, lambada, is a Hub download)")
    if plan.calib_dataset and not Path(plan.calib_dataset).is_file():
        raise ValueError(f"--calib-dataset {plan.calib_dataset}: no such file (a local JSONL with a `text` field)")


def write_calibration(plan: TrtllmPlan, limit: int = 512) -> int:
    """The calibration texts as `calib/lambada/validation.jsonl` (`text` key), which TRT-LLM reads offline."""
    import gzip
    import json

    plan.calib_dir.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if str(plan.calib_dataset).endswith(".gz") else open
    n = 0
    with opener(plan.calib_dataset, "rt", encoding="utf-8") as src, \
            open(plan.calib_dir / "validation.jsonl", "w", encoding="utf-8") as dst:
        for line in src:
            text = json.loads(line).get("text") if line.strip() else None
            if isinstance(text, str) and text.strip():
                dst.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                n += 1
                if n >= limit:
                    break
    if not n:
        raise ValueError(f"--calib-dataset {plan.calib_dataset}: no line with a `text` field")
    return n


def commands(plan: TrtllmPlan) -> list[list[str]]:
    variant = ["--gpt_variant", "gpt2"] if plan.family == "gpt2" else []
    convert = ["python3", "${EXAMPLE}/convert_checkpoint.py", "--model_dir", str(plan.hf_dir), *variant,
               "--dtype", "float16", "--tp_size", str(plan.tp), "--output_dir", str(plan.checkpoint_dir),
               *QUANT_FLAGS[plan.quant]]
    if plan.int8_kv_cache:
        convert.append("--int8_kv_cache")
    if plan.calibrates:
        convert += ["--calib_dataset", str(plan.calib_dir)]
    build = ["trtllm-build", "--checkpoint_dir", str(plan.checkpoint_dir), "--output_dir", str(plan.engine_dir),
             "--gemm_plugin", "auto", "--gpt_attention_plugin", "auto", "--context_fmha", "enable",
             "--use_paged_context_fmha", "enable",  # what KV-cache reuse across requests needs (the config enables it)
             "--remove_input_padding", "enable", "--kv_cache_type", "paged", "--tokens_per_block",
             str(plan.tokens_per_block), "--max_batch_size", str(plan.max_batch), "--max_input_len",
             str(plan.max_input_len), "--max_seq_len", str(plan.max_seq_len)]
    if plan.sparse:
        build.append("--weight_sparsity")
    return [convert, build]


FIND_EXAMPLE = """EXAMPLE="${TRTLLM_@VAR@_EXAMPLE:-}"
for d in /app/tensorrt_llm/examples/@EX@ /opt/tritonserver/tensorrtllm_backend/tensorrt_llm/examples/@EX@ \\
         /workspace/TensorRT-LLM/examples/@EX@ ./examples/@EX@; do
    if [ -z "$EXAMPLE" ] && [ -f "$d/convert_checkpoint.py" ]; then EXAMPLE="$d"; fi
done
if [ -z "$EXAMPLE" ]; then
    echo "TensorRT-LLM's examples/@EX@ not found: set TRTLLM_@VAR@_EXAMPLE to it (git clone --branch v0.14.0" \\
         "https://github.com/NVIDIA/TensorRT-LLM, the release of the NGC 24.10 image)" >&2
    exit 2
fi"""


def script(plan: TrtllmPlan) -> str:
    lines = ["#!/usr/bin/env bash", "# Written by `glotta export trtllm`; run inside the NGC TensorRT-LLM image.",
             "set -euo pipefail", FIND_EXAMPLE.replace("@EX@", plan.example).replace("@VAR@", plan.example.upper())]
    for cmd in commands(plan):
        # the example path keeps its ${...} default unquoted so the shell expands it
        lines.append(" ".join(c if c.startswith("${") else shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"
