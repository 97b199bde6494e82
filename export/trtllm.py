"""Megatron checkpoint → TensorRT-LLM engine: a Hugging Face folder, converted by TensorRT-LLM's own Python API
(glotta/export/trtllm_convert.py: the family's `from_hugging_face` / `quantize`), then `trtllm-build` with flags
checked here (TensorRT-LLM has no direct Megatron input).

The commands are written to `build.sh` so they can be read, kept and rerun where TensorRT-LLM is installed (the NGC
image, or the venv `make gpu-check` makes); `--run` runs them when `trtllm-build` is on PATH. What the engine is
built with is decided once, by `engine_features`, which writes both the build flags and the Triton config's
parameters — an engine and its config.pbtxt cannot disagree. Calibration (SmoothQuant and the INT8 KV cache) reads
local texts: `load_calib_dataset` (tensorrt_llm/models/convert_utils.py) takes a folder only when its name contains
`lambada` (split `validation`, key `text`), so the export writes them as `calib/lambada/validation.jsonl`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from glotta.core.atomic import atomic_write
from glotta.core.precision import base, check_precision, is_sparse
from glotta.modeling.megatron_reader import MegatronCheckpoint
from glotta.modeling.registry import TrtllmRecipe, get

# decoderMaskedMultiheadAttention.cu: MMHA_SUPPORTED_HEAD_SIZES
TRTLLM_HEAD_SIZES = (32, 48, 64, 80, 96, 104, 112, 128, 144, 160, 192, 224, 256)
PRECISIONS = ("fp16", "bf16", "int8", "int4", "fp16-sparse", "int8-sparse")
SMOOTHQUANT_ALPHA = 0.5  # convert_checkpoint.py's --smoothquant value in TensorRT-LLM's examples


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


@dataclass(frozen=True)
class EngineFeatures:
    """What an engine is built with, decided once for both its build flags and its Triton config."""

    paged_context_fmha: bool
    kv_cache_reuse: bool
    int8_kv_cache: bool
    weight_sparsity: bool

    def build_flags(self) -> list[str]:
        flags = ["--context_fmha", "enable", "--use_paged_context_fmha",
                 "enable" if self.paged_context_fmha else "disable"]
        return flags + (["--weight_sparsity"] if self.weight_sparsity else [])

    def config_parameters(self) -> dict[str, str]:
        """tensorrtllm_backend's config.pbtxt parameters these features decide."""
        return {"enable_kv_cache_reuse": "true" if self.kv_cache_reuse else "false"}


def engine_features(plan: TrtllmPlan) -> EngineFeatures:
    """The upstream rules, in one place:
    - tensorrt_llm/builder.py (`build`): with `use_paged_context_fmha`, an INT8 KV cache raises "Paged Context FMHA
      doesn't work with int8 kv cache currently." (the attention plugin checks the same at run time); an FP8 KV
      cache works there only in the FP8 quantization workflow (`has_fp8_qdq`) on Ada/Hopper GPUs — not built here;
    - tensorrtllm_backend docs (`enable_kv_cache_reuse`): reusing KV blocks across requests needs an engine built
      with paged context FMHA. So an INT8-KV engine is built without both, and its config says so."""
    paged = not plan.int8_kv_cache
    return EngineFeatures(paged_context_fmha=paged, kv_cache_reuse=paged, int8_kv_cache=plan.int8_kv_cache,
                          weight_sparsity=is_sparse(plan.precision))


def commands(plan: TrtllmPlan) -> list[list[str]]:
    dtype = "bfloat16" if base(plan.precision) == "bf16" else "float16"
    convert = ["${PYTHON}", "-m", "glotta.export.trtllm_convert", "--hf-dir", str(plan.hf_dir), "--model",
               plan.recipe.model, "--dtype", dtype, "--tp", str(plan.tp), "--output-dir", str(plan.checkpoint_dir),
               *(a for k, v in plan.recipe.options for a in ("--option", f"{k}={v}"))]
    if plan.smoothquant:
        convert += ["--smoothquant", str(SMOOTHQUANT_ALPHA)]
    elif base(plan.precision) in ("int8", "int4"):
        convert += ["--weight-only", base(plan.precision)]
    if plan.int8_kv_cache:
        convert.append("--int8-kv-cache")
    if plan.calibrates:
        convert += ["--calib-dir", str(plan.calib_dir)]
    build = ["trtllm-build", "--checkpoint_dir", str(plan.checkpoint_dir), "--output_dir", str(plan.engine_dir),
             "--gemm_plugin", "auto", "--gpt_attention_plugin", "auto", *engine_features(plan).build_flags(),
             "--remove_input_padding", "enable", "--kv_cache_type", "paged", "--tokens_per_block",
             str(plan.tokens_per_block), "--max_batch_size", str(plan.max_batch), "--max_input_len",
             str(plan.max_input_len), "--max_seq_len", str(plan.max_seq_len)]
    return [convert, build]


PREAMBLE = """#!/usr/bin/env bash
# Written by `glotta export trtllm`: run where TensorRT-LLM is installed (the NGC image; `make gpu-check`'s venv).
set -euo pipefail
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import tensorrt_llm, glotta.export.trtllm_convert" 2>/dev/null; then
    echo "$PYTHON cannot import tensorrt_llm and glotta: run inside the NGC TensorRT-LLM image (it has both), or set" \
         "PYTHON to an interpreter that has them" >&2
    exit 2
fi"""


def script(plan: TrtllmPlan) -> str:
    lines = [PREAMBLE]
    for cmd in commands(plan):
        # ${PYTHON} stays unquoted so the shell expands it
        lines.append(" ".join(c if c.startswith("${") else shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"


def write_build(plan: TrtllmPlan, hf_model, tokenizer_dir: str | Path, path: Path) -> Path:
    """What every TensorRT-LLM build starts from: the Hugging Face folder of `hf_model` with its tokenizer, the
    calibration texts when the build calibrates, and `build.sh` at `path`."""
    from glotta.core.tokenizer import copy_tokenizer_files

    hf_model.save_pretrained(plan.hf_dir, safe_serialization=True)  # eos/bos: TRT-LLM's end_id
    copy_tokenizer_files(tokenizer_dir, plan.hf_dir)
    if plan.calibrates:
        write_calibration(plan)
    path.write_text(script(plan))
    path.chmod(0o755)
    return path


def update_repository(plan: TrtllmPlan) -> list[Path]:
    """When the engine is built into a model repository (`--engine-dir REPO/NAME-engine/1`), the engine model's
    config.pbtxt gets the parameters this build decides, and the ensemble's glotta.json the engine's limits (the
    gateway answers an over-long prompt with a 400 and `finish_reason` from them)."""
    import re

    from glotta.modeling.model_folder import ModelFolder

    folder = Path(plan.engine_dir).resolve().parent
    config = folder / "config.pbtxt"
    written = []
    if folder.name.endswith("-engine") and config.is_file():
        text = config.read_text()
        for key, value in engine_features(plan).config_parameters().items():
            text = re.sub(rf'(key: "{key}"\s*value: {{ string_value: ")[^"]*(")', rf"\g<1>{value}\g<2>", text)
        atomic_write(config, text)
        written.append(config)
        ensemble = folder.parent / folder.name.removesuffix("-engine")
        if ModelFolder.is_model(ensemble):
            model = ModelFolder.open(ensemble)
            limits = {"max_input_len": plan.max_input_len, "max_seq_len": plan.max_seq_len}
            model.spec.with_(limits=limits).write(ensemble)
            written.append(ensemble / "glotta.json")
    return written


def plan_for(ckpt: MegatronCheckpoint, output: Path, engine_dir: Path | None = None, **options) -> TrtllmPlan:
    """The build plan of a checkpoint: its family's TensorRT-LLM class and the Hugging Face folder to convert."""
    # TRT-LLM v0.14 guesses a GPT's variant from the folder's name, hence hf-<family> (hf-gpt2; the family's
    # convert flags say it explicitly too)
    return TrtllmPlan(hf_dir=output / f"hf-{ckpt.family}", checkpoint_dir=output / "trtllm-checkpoint",
                      engine_dir=engine_dir or output / "engine", recipe=get(ckpt.family).trtllm, **options)


def export_trtllm(source: str | Path, output: str | Path, tokenizer: str | Path | None = None,
                  engine_dir: str | Path | None = None, **options) -> TrtllmPlan:
    """The Hugging Face folder, the calibration texts (when the build calibrates) and `build.sh`."""
    from glotta.modeling.megatron_hf import to_hf

    from .tokenizer_source import read_checkpoint, tokenizer_dir

    out = Path(output)
    tok = tokenizer_dir(source, tokenizer)
    ckpt = read_checkpoint(source, tok)
    plan = plan_for(ckpt, out, Path(engine_dir) if engine_dir else None, **options)
    validate(plan, ckpt)
    write_build(plan, to_hf(ckpt, tok), tok, out / "build.sh")
    update_repository(plan)
    return plan
