"""Megatron checkpoint → TensorRT-LLM engine: a Hugging Face folder, then TensorRT-LLM's own `convert_checkpoint.py`
(the examples folder the family's recipe names: gpt, llama, qwen) and `trtllm-build` with flags checked here
(TensorRT-LLM has no direct Megatron input).

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

from glotta.core.precision import base, check_precision, is_sparse
from glotta.modeling.megatron_reader import MegatronCheckpoint
from glotta.modeling.registry import TrtllmRecipe, get

# decoderMaskedMultiheadAttention.cu: MMHA_SUPPORTED_HEAD_SIZES
TRTLLM_HEAD_SIZES = (32, 48, 64, 80, 96, 104, 112, 128, 144, 160, 192, 224, 256)
PRECISIONS = ("fp16", "bf16", "int8", "int4", "fp16-sparse", "int8-sparse")
# the quantization flags of each precision (int8 and int4: weight-only; SmoothQuant is int8 with --smoothquant)
QUANT_FLAGS = {
    "fp16": [], "bf16": [],
    "int8": ["--use_weight_only", "--weight_only_precision", "int8"],
    "int4": ["--use_weight_only", "--weight_only_precision", "int4"],
}
SMOOTHQUANT_FLAGS = ["--smoothquant", "0.5", "--per_channel", "--per_token"]


@dataclass
class TrtllmPlan:
    hf_dir: Path
    checkpoint_dir: Path
    engine_dir: Path
    recipe: TrtllmRecipe  # the family's TensorRT-LLM class, example folder and flags
    tp: int = 1
    precision: str = "fp16"
    smoothquant: bool = False
    max_batch: int = 64
    max_input_len: int = 1024
    max_seq_len: int = 2048
    tokens_per_block: int = 64
    int8_kv_cache: bool = False
    calib_dataset: str | None = None  # a local JSONL(.gz) of texts (`text` field) for calibration

    @property
    def example(self) -> str:
        return self.recipe.example

    @property
    def calibrates(self) -> bool:
        """TRT-LLM calibrates activations for SmoothQuant and for the INT8 KV cache."""
        return self.smoothquant or self.int8_kv_cache

    @property
    def calib_dir(self) -> Path:
        """Where the export writes the calibration texts: a name `load_calib_dataset` recognizes (lambada)."""
        return self.hf_dir.parent / "calib" / "lambada"


def validate(plan: TrtllmPlan, ckpt: MegatronCheckpoint) -> None:
    """Refuse what the TensorRT-LLM GPT path cannot build or run, with the reason."""
    arch = ckpt.architecture
    h, heads = arch.n_embd, arch.n_head
    if h % heads or h // heads not in TRTLLM_HEAD_SIZES:
        raise ValueError(f"head size {h}/{heads} = {h / heads:g} is not supported by TensorRT-LLM's masked multi-head "
                         f"attention (supported: {', '.join(map(str, TRTLLM_HEAD_SIZES))})")
    check_precision(plan.precision, PRECISIONS)
    if plan.smoothquant and base(plan.precision) != "int8":
        raise ValueError("--smoothquant is an INT8 method: use it with --precision int8")
    if heads % plan.tp:
        raise ValueError(f"{heads} heads cannot be split over --tp {plan.tp}")
    if plan.max_seq_len > arch.n_positions:
        raise ValueError(f"--max-seq-len {plan.max_seq_len} exceeds the model's {arch.n_positions} positions")
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
    quant = SMOOTHQUANT_FLAGS if plan.smoothquant else QUANT_FLAGS[base(plan.precision)]
    dtype = "bfloat16" if base(plan.precision) == "bf16" else "float16"
    convert = ["python3", "${EXAMPLE}/convert_checkpoint.py", "--model_dir", str(plan.hf_dir),
               *plan.recipe.convert_flags, "--dtype", dtype, "--tp_size", str(plan.tp), "--output_dir",
               str(plan.checkpoint_dir), *quant]
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
    if is_sparse(plan.precision):
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


def plan_for(ckpt: MegatronCheckpoint, output: Path, engine_dir: Path | None = None, **options) -> TrtllmPlan:
    """The build plan of a checkpoint: its family's TensorRT-LLM class and the Hugging Face folder to convert."""
    # TRT-LLM v0.14 guesses a GPT's variant from the folder's name, hence hf-<family> (hf-gpt2; the family's
    # convert flags say it explicitly too)
    return TrtllmPlan(hf_dir=output / f"hf-{ckpt.family}", checkpoint_dir=output / "trtllm-checkpoint",
                      engine_dir=engine_dir or output / "engine", recipe=get(ckpt.family).trtllm, **options)


def export_trtllm(source: str | Path, output: str | Path, tokenizer: str | Path | None = None,
                  engine_dir: str | Path | None = None, **options) -> TrtllmPlan:
    """The Hugging Face folder, the calibration texts (when the build calibrates) and `build.sh`."""
    from glotta.core.tokenizer import copy_tokenizer_files
    from glotta.modeling.megatron_hf import to_hf

    from .tokenizer_source import read_checkpoint, tokenizer_dir

    out = Path(output)
    tok = tokenizer_dir(source, tokenizer)
    ckpt = read_checkpoint(source, tok)
    plan = plan_for(ckpt, out, Path(engine_dir) if engine_dir else None, **options)
    validate(plan, ckpt)
    to_hf(ckpt, tok).save_pretrained(plan.hf_dir, safe_serialization=True)  # eos/bos: TRT-LLM's end_id
    if plan.calibrates:
        write_calibration(plan)
    copy_tokenizer_files(tok, plan.hf_dir)
    build = out / "build.sh"
    build.write_text(script(plan))
    build.chmod(0o755)
    return plan
