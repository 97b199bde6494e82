"""`glotta export fastertransformer | tensorrt | trtllm`: GPU engines for the Triton repository."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from .common import console, fail, handles_errors
from .export import checkpoint_arguments, read_checkpoint, tokenizer_dir


class FasterTransformer:
    name, help = "fastertransformer", "Megatron checkpoint → FasterTransformer GPT weights (megatron_ckpt_convert.py's " \
                                      "layout), optionally as a Triton model folder"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        checkpoint_arguments(p, "the model's tokenizer: start_id/end_id are its <|endoftext|>")
        p.add_argument("--infer-gpus", type=int, default=1, help="inference tensor-parallel size")
        p.add_argument("--weight-data-type", choices=["fp32", "fp16"], default="fp16", help="weights on disk")
        p.add_argument("--int8-mode", type=int, choices=[0, 1], default=0,
                       help="1 = weight-only INT8 quantized by FT at load (fp16 only)")
        p.add_argument("--triton", action="store_true", help="--output is a Triton model folder (weights in "
                       "OUT/1/N-gpu, config.pbtxt beside)")
        p.add_argument("--visible-gpus", type=int, help="--triton: GPUs the Triton server sees (default: --infer-gpus)"
                       "; FasterTransformer needs instances × TP ≥ visible GPUs, so the config gets that many")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.export import fastertransformer as ft
        from glotta.server.triton.config_writers.engines import engine_config

        out = Path(a.output)
        tok = tokenizer_dir(a)
        merged, shape = read_checkpoint(a, tok)
        ft.check_shape(shape, a.infer_gpus)  # before anything is written
        if a.weight_data_type == "fp32" and a.int8_mode == 1:
            return fail("FT's int8 weight-only mode needs fp16 compute: use --weight-data-type fp16")
        folder = ft.write(merged, shape, out / "1" if a.triton else out, a.infer_gpus, tok, a.weight_data_type)
        console.print(f"wrote {folder}: {shape.layers} layers, {shape.heads} heads × {shape.head_size}, TP {shape.tp} "
                      f"(training) → {a.infer_gpus} (inference), {a.weight_data_type}")
        if a.triton:
            overrides = {"tensor_para_size": str(a.infer_gpus), "data_type": a.weight_data_type,
                         "int8_mode": str(a.int8_mode)}
            (out / "config.pbtxt").write_text(engine_config(out.name, "fastertransformer", overrides, a.visible_gpus))
            console.print(f"wrote {out / 'config.pbtxt'} (fastertransformer backend, tensor_para_size {a.infer_gpus})")
        console.print("note: FasterTransformer computes GELU with the tanh approximation; Megatron trains with the "
                      "exact one (logits differ slightly). FasterTransformer is unmaintained: prefer `glotta export "
                      "trtllm`.")
        return 0


class TensorRT:
    name, help = "tensorrt", "ONNX (a served model folder or file) → TensorRT plan: FP16, explicit INT8, 2:4 sparse"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("source", help="a served model folder (its 1/model.onnx) or an ONNX file")
        p.add_argument("--output", required=True, help="the .plan file to write")
        p.add_argument("--tokenizer", help="tokenizer for INT8 calibration (default: the model folder's)")
        p.add_argument("--int8", action="store_true", help="explicit INT8 (Q/DQ ONNX calibrated on CPU)")
        p.add_argument("--sparse", action="store_true", help="2:4 SPARSE_WEIGHTS (prunes the ONNX if it is not 2:4)")
        p.add_argument("--no-fp16", action="store_true", help="leave FP16 kernels off")
        p.add_argument("--max-batch", type=int, default=16, help="largest batch of the optimization profile")
        p.add_argument("--max-seq", type=int, default=256, help="longest context (past + new tokens)")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.export import tensorrt as trt_export
        from glotta.export.sparsity import sparsify_onnx, verify_path

        src = Path(a.source)
        onnx_path = src / "1" / "model.onnx" if src.is_dir() else src
        if not onnx_path.is_file():
            return fail(f"{onnx_path}: no such ONNX file")
        try:
            trt_export.require_tensorrt()
        except trt_export.TensorRTUnavailable as e:
            return fail(e)
        work = Path(a.output).with_suffix(".work")
        work.mkdir(parents=True, exist_ok=True)
        if a.sparse and not verify_path(onnx_path).ok:
            n = sparsify_onnx(onnx_path, work / "sparse.onnx")
            console.print(f"pruned {n} matrices 2:4 (magnitude, along the reduction dimension) → {work / 'sparse.onnx'}")
            onnx_path = work / "sparse.onnx"
        if a.int8:
            onnx_path = trt_export.quantize_qdq(onnx_path, work / "qdq.onnx", trt_export.calibration_ids(Path(a.tokenizer or src)))
            console.print(f"explicit INT8 (Q/DQ, symmetric, per-channel weights) → {onnx_path}")
        info = trt_export.build_engine(onnx_path, a.output, fp16=not a.no_fp16, int8=a.int8, sparse=a.sparse,
                                       max_batch=a.max_batch, max_seq=a.max_seq)
        console.print(json.dumps(info, indent=2))
        return 0


class TrtLLM:
    name, help = "trtllm", "Megatron checkpoint → Hugging Face folder + TensorRT-LLM convert/build script"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        checkpoint_arguments(p, "the model's tokenizer, copied into the Hugging Face folder")
        p.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
        p.add_argument("--quant", default="fp16", help="fp16, int8-wo, int4-wo or smoothquant")
        p.add_argument("--sparse", action="store_true", help="--weight_sparsity (2:4 weights)")
        p.add_argument("--int8-kv-cache", action="store_true", help="INT8 KV cache (calibrated: needs --calib-dataset)")
        p.add_argument("--calib-dataset", help="smoothquant / --int8-kv-cache: a local JSONL(.gz) of texts (`text` "
                       "field), e.g. prepared data; written where TensorRT-LLM reads it offline")
        p.add_argument("--max-batch", type=int, default=16, help="largest batch")
        p.add_argument("--max-input-len", type=int, default=512, help="longest prompt")
        p.add_argument("--max-seq-len", type=int, default=1024, help="longest prompt + generation")
        p.add_argument("--engine-dir", help="where trtllm-build writes (e.g. model_repository/glotta-fr-trtllm-engine/1)")
        p.add_argument("--run", action="store_true", help="run build.sh now (needs TensorRT-LLM)")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.core.megatron.hf import to_hf
        from glotta.core.tokenizer import copy_tokenizer_files
        from glotta.export.trtllm import TrtllmPlan, script, validate, write_calibration

        out = Path(a.output)
        tok = tokenizer_dir(a)
        merged, shape = read_checkpoint(a, tok)
        # TRT-LLM v0.14 guesses a GPT's variant from the folder's name: hf-gpt2 (and it is given explicitly too)
        plan = TrtllmPlan(hf_dir=out / f"hf-{shape.family}", checkpoint_dir=out / "trtllm-checkpoint",
                          engine_dir=Path(a.engine_dir) if a.engine_dir else out / "engine", tp=a.tp, quant=a.quant,
                          sparse=a.sparse, max_batch=a.max_batch, max_input_len=a.max_input_len,
                          max_seq_len=a.max_seq_len, int8_kv_cache=a.int8_kv_cache, calib_dataset=a.calib_dataset,
                          family=shape.family)
        validate(plan, shape)
        hf = to_hf(merged, shape, tok)  # eos/bos: TRT-LLM's end_id, the tokenizer's end of document
        hf.save_pretrained(plan.hf_dir, safe_serialization=True)
        if plan.calibrates:
            n = write_calibration(plan)
            console.print(f"calibration: {n} texts of {plan.calib_dataset} → {plan.calib_dir} (read offline)")
        copy_tokenizer_files(tok, plan.hf_dir)
        build = out / "build.sh"
        build.write_text(script(plan))
        build.chmod(0o755)
        console.print(f"wrote {plan.hf_dir} and {build}:\n{build.read_text()}", markup=False)
        if not a.run:
            return 0
        if shutil.which("trtllm-build") is None:
            return fail("trtllm-build is not on PATH: run build.sh inside nvcr.io/nvidia/tritonserver:24.10-trtllm-"
                        "python-py3 (or after `pip install tensorrt_llm==0.14.0 --extra-index-url "
                        "https://pypi.nvidia.com`)")
        return subprocess.call(["bash", str(build)])
