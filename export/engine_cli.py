"""`glotta export fastertransformer | tensorrt | trtllm`: GPU engines for the Triton repository."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from rich.console import Console

console = Console(soft_wrap=True)  # messages whole: no wrapping in the middle of a path
err = Console(stderr=True, soft_wrap=True)


def _eod_id(tokenizer: str | None, vocab: int) -> int:
    if tokenizer:
        from tokenizers import Tokenizer

        eod = Tokenizer.from_file(str(Path(tokenizer) / "tokenizer.json")).token_to_id("<|endoftext|>")
        if eod is not None:
            return eod
    return 50256 if vocab > 50256 else vocab - 1


def fastertransformer(a: argparse.Namespace) -> int:
    from glotta.server.triton.gpu_configs import engine_config

    from . import fastertransformer as ft
    from .megatron_reader import CheckpointError, read

    if not (a.source and a.output):
        err.print("[red]error:[/] `glotta export fastertransformer` needs CHECKPOINT and --output")
        return 2
    out = Path(a.output)
    weights_dir = out / "1" if a.triton else out
    try:
        merged, shape = read(a.source, a.vocab_size)
        ft.check_shape(shape, a.infer_gpus)  # before anything is written
        if a.weight_data_type == "fp32" and a.int8_mode == 1:
            raise ft.FTExportError("FT's int8 weight-only mode needs fp16 compute: use --weight-data-type fp16")
        folder = ft.write(merged, shape, weights_dir, a.infer_gpus, a.weight_data_type,
                          _eod_id(a.tokenizer, shape["vocab"]), a.tokenizer)
    except (CheckpointError, ft.FTExportError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    console.print(f"wrote {folder}: {shape['layers']} layers, {shape['heads']} heads × {shape['hidden'] // shape['heads']}"
                  f", TP {shape['tp']} (training) → {a.infer_gpus} (inference), {a.weight_data_type}")
    if a.triton:
        overrides = {"tensor_para_size": str(a.infer_gpus), "data_type": a.weight_data_type,
                     "int8_mode": str(a.int8_mode)}
        (out / "config.pbtxt").write_text(engine_config(out.name, "fastertransformer", overrides))
        console.print(f"wrote {out / 'config.pbtxt'} (fastertransformer backend, tensor_para_size {a.infer_gpus})")
    console.print("note: FasterTransformer computes GELU with the tanh approximation; Megatron trains with the exact "
                  "one (logits differ slightly). FasterTransformer is unmaintained: prefer `glotta export trtllm`.")
    return 0


def tensorrt(a: argparse.Namespace) -> int:
    from . import tensorrt as trt_export
    from .sparsity import sparsify_onnx, verify_path

    if not (a.source and a.output):
        err.print("[red]error:[/] `glotta export tensorrt` needs an ONNX file or model folder, and --output PLAN")
        return 2
    src = Path(a.source)
    onnx_path = src / "1" / "model.onnx" if src.is_dir() else src
    if not onnx_path.is_file():
        err.print(f"[red]error:[/] {onnx_path}: no such ONNX file")
        return 2
    try:
        trt_export.require_tensorrt()
    except trt_export.TensorRTUnavailable as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    work = Path(a.output).with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    if a.sparse and not verify_path(onnx_path).ok:
        n = sparsify_onnx(onnx_path, work / "sparse.onnx")
        console.print(f"pruned {n} matrices 2:4 (magnitude, along the reduction dimension) → {work / 'sparse.onnx'}")
        onnx_path = work / "sparse.onnx"
    if a.int8:
        onnx_path = trt_export.quantize_qdq(onnx_path, work / "qdq.onnx", calibration_ids(src, a.tokenizer))
        console.print(f"explicit INT8 (Q/DQ, symmetric, per-channel weights) → {onnx_path}")
    info = trt_export.build_engine(onnx_path, a.output, fp16=not a.no_fp16, int8=a.int8, sparse=a.sparse,
                                   max_batch=a.max_batch, max_seq=a.max_seq)
    console.print(json.dumps(info, indent=2))
    return 0


def calibration_ids(model_dir: Path, tokenizer: str | None) -> list[list[int]]:
    """Token ids of the shipped load-test prompts, the calibration set for INT8."""
    from importlib.resources import files

    from tokenizers import Tokenizer

    tok_file = Path(tokenizer or model_dir) / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file}: INT8 calibration needs the model's tokenizer (--tokenizer DIR)")
    tok = Tokenizer.from_file(str(tok_file))
    prompts = files("glotta.loadtests").joinpath("prompts.jsonl").read_text().splitlines()
    return [tok.encode(json.loads(line)["prompt"]).ids for line in prompts if line.strip()]


def trtllm(a: argparse.Namespace) -> int:
    from glotta.training.tokenizer import copy_files

    from .megatron_reader import CheckpointError, read, to_hf
    from .trtllm import TrtllmPlan, script, validate

    if not (a.source and a.output):
        err.print("[red]error:[/] `glotta export trtllm` needs CHECKPOINT and --output")
        return 2
    out = Path(a.output)
    plan = TrtllmPlan(hf_dir=out / "hf", checkpoint_dir=out / "trtllm-checkpoint",
                      engine_dir=Path(a.engine_dir) if a.engine_dir else out / "engine", tp=a.tp, quant=a.quant,
                      sparse=a.sparse, max_batch=a.max_batch, max_input_len=a.max_input_len,
                      max_seq_len=a.max_seq_len, int8_kv_cache=a.int8_kv_cache, calib_dataset=a.calib_dataset)
    try:
        merged, shape = read(a.source, a.vocab_size)
        validate(plan, shape)
    except (CheckpointError, ValueError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    to_hf(merged, shape).save_pretrained(plan.hf_dir, safe_serialization=True)
    if a.tokenizer:
        copy_files(a.tokenizer, plan.hf_dir)
    build = out / "build.sh"
    build.write_text(script(plan))
    build.chmod(0o755)
    console.print(f"wrote {plan.hf_dir} and {build}:\n{build.read_text()}")
    if not a.run:
        return 0
    if shutil.which("trtllm-build") is None:
        err.print("[red]error:[/] trtllm-build is not on PATH: run build.sh inside nvcr.io/nvidia/tritonserver:"
                  "24.10-trtllm-python-py3 (or after `pip install tensorrt_llm --extra-index-url https://pypi.nvidia.com`)")
        return 2
    return subprocess.call(["bash", str(build)])


def add_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("--infer-gpus", type=int, default=1, help="fastertransformer: inference tensor-parallel size")
    e.add_argument("--weight-data-type", choices=["fp32", "fp16"], default="fp16", help="fastertransformer")
    e.add_argument("--int8-mode", type=int, choices=[0, 1], default=0,
                   help="fastertransformer: 1 = weight-only INT8 quantized by FT at load (fp16 only)")
    e.add_argument("--triton", action="store_true", help="fastertransformer: --output is a Triton model folder "
                   "(weights in OUT/1/N-gpu, config.pbtxt beside)")
    e.add_argument("--int8", action="store_true", help="tensorrt: explicit INT8 (Q/DQ ONNX calibrated on CPU)")
    e.add_argument("--sparse", action="store_true", help="tensorrt: 2:4 SPARSE_WEIGHTS (prunes the ONNX if it is "
                   "not 2:4 yet); trtllm: --weight_sparsity")
    e.add_argument("--no-fp16", action="store_true", help="tensorrt: leave FP16 kernels off")
    e.add_argument("--max-batch", type=int, default=16, help="tensorrt / trtllm: largest batch")
    e.add_argument("--max-seq", type=int, default=256, help="tensorrt: longest context (past + new tokens)")
    e.add_argument("--tp", type=int, default=1, help="trtllm: tensor-parallel size")
    e.add_argument("--quant", default="fp16", help="trtllm: fp16, int8-wo, int4-wo or smoothquant")
    e.add_argument("--int8-kv-cache", action="store_true", help="trtllm")
    e.add_argument("--calib-dataset", help="trtllm smoothquant: a local calibration dataset")
    e.add_argument("--max-input-len", type=int, default=512, help="trtllm")
    e.add_argument("--max-seq-len", type=int, default=1024, help="trtllm")
    e.add_argument("--engine-dir", help="trtllm: where trtllm-build writes (e.g. model_repository/glotta-fr-trtllm-"
                   "engine/1)")
    e.add_argument("--run", action="store_true", help="trtllm: run build.sh now (needs TensorRT-LLM)")


HANDLERS = {"fastertransformer": fastertransformer, "tensorrt": tensorrt, "trtllm": trtllm}
