"""`glotta export TARGET`: flags in, one call of the `glotta.export` Python API, a report out.

Targets that read a Megatron checkpoint: `hf`, `onnx` (also a Hugging Face folder), `sparsify`, `fastertransformer`,
`trtllm`; `tensorrt` reads an ONNX model; `plan` sizes the serving of any model; `verify-24` checks any file for 2:4
sparsity. Precisions are the one vocabulary of glotta.core.precision.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from rich.table import Table

from .common import check_old_spellings, console, fail, handles_errors, refuse_old_spellings


def _source(p: argparse.ArgumentParser, what: str, tokenizer_help: str) -> None:
    p.add_argument("source", help=what)
    p.add_argument("--output", required=True, help="what to write")
    p.add_argument("--tokenizer", help=tokenizer_help + " (default: the tokenizer the checkpoint's arguments name, or "
                   "one beside it); its size also trims Megatron's vocabulary padding")


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", help="Megatron checkpoint directory, training preset (meme-1.7b) or YAML")
    p.add_argument("--params", type=float, help="parameter count instead of a config, e.g. 175e9")
    p.add_argument("--params-label", help="name shown for --params")
    p.add_argument("--num-layers", type=int, help="with --params: for the KV cache")
    p.add_argument("--hidden-size", type=int, help="with --params: for the KV cache")
    p.add_argument("--batch", type=int, default=1, help="sequences in the KV cache")
    p.add_argument("--seq-length", type=int, default=2048, help="tokens per sequence for the KV cache")
    p.add_argument("--usable", type=float, default=0.9, help="fraction of GPU memory available to the model")


def _plan(a: argparse.Namespace) -> int:
    from glotta.core.megatron.checkpoint import is_checkpoint
    from glotta.export.plan import plan_architecture, plan_checkpoint, plan_parameters

    sizing = dict(batch=a.batch, seq_length=a.seq_length, usable=a.usable)
    if a.params:
        plan = plan_parameters(a.params, a.params_label, a.num_layers, a.hidden_size, **sizing)
    elif not a.source:
        return fail("give a checkpoint, a training preset / YAML config, or --params N")
    elif is_checkpoint(a.source):
        plan = plan_checkpoint(a.source, **sizing)
    else:
        from glotta.training.megatron_config import load

        cfg = load(a.source)
        plan = plan_architecture(f"{cfg.name}: {cfg.family}", cfg.architecture(), **sizing)
    t = Table(title=f"{plan.label}: weights")
    for col in ("precision", "GiB", "formula"):
        t.add_column(col, justify="right")
    for precision, gib in plan.weights.items():
        t.add_row(precision, f"{gib:,.2f}", f"{plan.parameters:,} × bytes / 1024³")
    console.print(t)
    if plan.kv_bytes_per_token:
        console.print(f"KV cache (fp16): {plan.kv_bytes_per_token / 1024**2:.3f} MiB per token; batch {a.batch} × "
                      f"{a.seq_length} tokens = {plan.kv_gib:,.2f} GiB")
    t2 = Table(title=f"minimum tensor parallel (weights + KV cache within {a.usable:.0%} of memory)")
    t2.add_column("GPU")
    for precision in plan.weights:
        t2.add_column(precision, justify="right")
    for gpu, cells in plan.min_tp.items():
        t2.add_row(gpu, *(str(tp) if tp else "> 64" for tp in cells.values()))
    console.print(t2)
    console.print("GiB = 1024³ bytes (the source talk's 325.96 \"GB\" for 175 B fp16 weights is GiB: "
                  "350 GB in 10⁹ bytes)")
    return 0


def _hf_args(p: argparse.ArgumentParser) -> None:
    _source(p, "Megatron checkpoint directory (any layout, tensor/pipeline parallel)", "copied beside the model")


def _hf(a: argparse.Namespace) -> int:
    from glotta.export.hf import export_hf

    r = export_hf(a.source, a.output, a.tokenizer)
    console.print(f"wrote {r.path} ({r.family}: safetensors + config{' + tokenizer' if r.tokenizer else ''}): "
                  f"{r.summary}")
    if r.tokenizer is None:
        console.print("no tokenizer found (--tokenizer, the checkpoint's vocab/merge files, or beside it): the "
                      "folder has no tokenizer and no eos id, so it cannot be served as it is")
    return 0


def _onnx_args(p: argparse.ArgumentParser) -> None:
    _source(p, "Megatron checkpoint directory, or a Hugging Face folder (a registered family: GPT-2, Llama, Qwen2)",
            "the served model's tokenizer")
    p.add_argument("--fp16-storage", action="store_true", help="store the exchange graph's weights in fp16 (half the "
                   "file; computed in fp32)")


def _onnx(a: argparse.Namespace) -> int:
    from glotta.export.served_folder import export_served_folder

    out = export_served_folder(a.source, a.output, a.tokenizer, a.fp16_storage)
    console.print(f"wrote {out}: serve it with `glotta serve --model {out}` (add --precision int8 for INT8)")
    return 0


def _sparsify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="Megatron checkpoint directory")
    p.add_argument("--output", required=True, help="the pruned checkpoint directory")
    p.add_argument("--data-path", help="validation dataset prefix (.bin/.idx) for the perplexity")
    p.add_argument("--seq-length", type=int, default=2048, help="sample length for the perplexity")


def _sparsify(a: argparse.Namespace) -> int:
    from glotta.export.sparsity import sparsify_checkpoint

    r = sparsify_checkpoint(a.source, a.output, a.data_path, a.seq_length)
    console.print(f"pruned {r.pruned} matrices 2:4 ({r.check.zero_fraction:.1%} zeros, verifier: "
                  f"{'ok' if r.check.ok else 'FAILED'}) → {a.output}")
    if r.perplexity_before is not None:
        console.print(f"validation perplexity on {a.data_path}: {r.perplexity_before:.2f} dense → "
                      f"{r.perplexity_after:.2f} pruned (before any recovery fine-tuning: `glotta train local` on the "
                      "pruned checkpoint)")
    return 0


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="Megatron checkpoint, Hugging Face folder or ONNX file")


def _verify(a: argparse.Namespace) -> int:
    from glotta.export.sparsity import verify_path

    r = verify_path(a.source)
    verdict = "[green]2:4 sparse[/]" if r.ok else "[red]not 2:4 sparse[/]"
    console.print(f"{a.source}: {verdict} — {r.tensors} matrices, {r.groups:,} groups, {r.bad_groups:,} with "
                  f"more than 2 non-zeros, {r.zero_fraction:.1%} zeros")
    for o in (r.offenders or [])[:10]:
        console.print(f"  {o}", markup=False)
    return 0 if r.ok else 1


def _ft_args(p: argparse.ArgumentParser) -> None:
    from glotta.export.fastertransformer import PRECISIONS

    _source(p, "Megatron checkpoint directory", "the model's tokenizer: start_id/end_id are its end of document")
    p.add_argument("--infer-gpus", type=int, default=1, help="inference tensor-parallel size")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="fp32 or fp16 weights; int8: fp16 weights "
                   "FasterTransformer quantizes at load (its int8_mode 1)")
    p.add_argument("--triton", action="store_true", help="--output is a Triton model folder (weights in "
                   "OUT/1/N-gpu, config.pbtxt beside)")
    p.add_argument("--visible-gpus", type=int, help="--triton: GPUs the Triton server sees (default: --infer-gpus); "
                   "FasterTransformer needs instances × TP ≥ visible GPUs, so the config gets that many")
    refuse_old_spellings(p, ("--int8-mode", "--weight-data-type"))


def _ft(a: argparse.Namespace) -> int:
    from glotta.export.fastertransformer import export_fastertransformer

    folder, ckpt = export_fastertransformer(a.source, a.output, a.tokenizer, a.infer_gpus, a.precision, a.triton,
                                            a.visible_gpus)
    arch = ckpt.architecture
    console.print(f"wrote {folder}: {arch.n_layer} layers, {arch.n_head} heads × {arch.d_head}, TP {ckpt.tp} "
                  f"(training) → {a.infer_gpus} (inference), {a.precision}")
    if a.triton:
        console.print(f"wrote {Path(a.output) / 'config.pbtxt'} (fastertransformer backend)")
    console.print("note: FasterTransformer computes GELU with the tanh approximation; Megatron trains with the exact "
                  "one (logits differ slightly). FasterTransformer is unmaintained: prefer `glotta export trtllm`.")
    return 0


def _tensorrt_args(p: argparse.ArgumentParser) -> None:
    from glotta.export.tensorrt import PRECISIONS

    p.add_argument("source", help="a served model folder (its 1/model.onnx) or an ONNX file")
    p.add_argument("--output", required=True, help="the .plan file to write")
    p.add_argument("--tokenizer", help="tokenizer for INT8 calibration (default: the model folder's)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="int8: explicit INT8 (Q/DQ calibrated "
                   "on CPU); -sparse: 2:4 SPARSE_WEIGHTS (the ONNX is pruned first if it is not 2:4)")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch of the optimization profile")
    p.add_argument("--max-seq", type=int, default=256, help="longest context (past + new tokens)")
    refuse_old_spellings(p, ("--int8", "--sparse", "--no-fp16"))


def _tensorrt(a: argparse.Namespace) -> int:
    from glotta.export.tensorrt import TensorRTUnavailable, export_tensorrt

    try:
        info = export_tensorrt(a.source, a.output, a.tokenizer, a.precision, a.max_batch, a.max_seq)
    except TensorRTUnavailable as e:
        return fail(e)
    for step in info.pop("steps"):
        console.print(step)
    console.print(json.dumps(info, indent=2))
    return 0


def _trtllm_args(p: argparse.ArgumentParser) -> None:
    from glotta.export.trtllm import PRECISIONS

    _source(p, "Megatron checkpoint directory", "the model's tokenizer, copied into the Hugging Face folder")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="int8 / int4: weight-only; -sparse: "
                   "2:4 weights (--weight_sparsity)")
    p.add_argument("--smoothquant", action="store_true", help="with --precision int8: SmoothQuant (W8A8, "
                   "calibrated: needs --calib-dataset)")
    p.add_argument("--int8-kv-cache", action="store_true", help="INT8 KV cache (calibrated: needs --calib-dataset)")
    p.add_argument("--calib-dataset", help="--smoothquant / --int8-kv-cache: a local JSONL(.gz) of texts (`text` "
                   "field), e.g. prepared data; written where TensorRT-LLM reads it offline")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch")
    p.add_argument("--max-input-len", type=int, default=512, help="longest prompt")
    p.add_argument("--max-seq-len", type=int, default=1024, help="longest prompt + generation")
    p.add_argument("--engine-dir", help="where trtllm-build writes (e.g. model_repository/glotta-fr-trtllm-engine/1)")
    p.add_argument("--run", action="store_true", help="run build.sh now (needs TensorRT-LLM)")
    refuse_old_spellings(p, ("--quant", "--sparse"))


def _trtllm(a: argparse.Namespace) -> int:
    from glotta.export.trtllm import export_trtllm

    plan = export_trtllm(a.source, a.output, a.tokenizer, a.engine_dir, tp=a.tp, precision=a.precision,
                         smoothquant=a.smoothquant, int8_kv_cache=a.int8_kv_cache, calib_dataset=a.calib_dataset,
                         max_batch=a.max_batch, max_input_len=a.max_input_len, max_seq_len=a.max_seq_len)
    build = Path(a.output) / "build.sh"
    console.print(f"wrote {plan.hf_dir} and {build}:\n{build.read_text()}", markup=False)
    if not a.run:
        return 0
    if shutil.which("trtllm-build") is None:
        return fail("trtllm-build is not on PATH: run build.sh inside nvcr.io/nvidia/tritonserver:24.10-trtllm-"
                    "python-py3 (or after `pip install tensorrt_llm==0.14.0 --extra-index-url https://pypi.nvidia.com`)")
    return subprocess.call(["bash", str(build)])


# name → (help, arguments, run)
TARGETS: dict[str, tuple[str, Callable, Callable]] = {
    "plan": ("serving plan: weights per precision, KV cache, minimum tensor parallel per GPU", _plan_args, _plan),
    "hf": ("Megatron checkpoint → Hugging Face folder of its family (safetensors + config + tokenizer)", _hf_args,
           _hf),
    "onnx": ("Megatron checkpoint or Hugging Face folder → served model folder (ONNX, tokenizer, Triton config)",
             _onnx_args, _onnx),
    "sparsify": ("prune a Megatron checkpoint 2:4 (magnitude) and report the perplexity before and after",
                 _sparsify_args, _sparsify),
    "verify-24": ("check that a checkpoint, Hugging Face folder or ONNX file is 2:4 sparse", _verify_args, _verify),
    "fastertransformer": ("Megatron checkpoint → FasterTransformer GPT weights (megatron_ckpt_convert.py's layout), "
                          "optionally as a Triton model folder", _ft_args, _ft),
    "tensorrt": ("ONNX (a served model folder or file) → TensorRT plan: FP16, explicit INT8, 2:4 sparse",
                 _tensorrt_args, _tensorrt),
    "trtllm": ("Megatron checkpoint → Hugging Face folder + TensorRT-LLM build script", _trtllm_args, _trtllm),
}


def register(sub) -> None:
    e = sub.add_parser("export", help="serving plan; Megatron checkpoints → Hugging Face / ONNX / FasterTransformer / "
                       "TensorRT(-LLM)")
    targets = e.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name, (help_text, arguments, run) in TARGETS.items():
        p = targets.add_parser(name, help=help_text, description=help_text)
        arguments(p)

        @handles_errors()
        def call(a: argparse.Namespace, run=run, name=name) -> int:
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            from glotta.core.progress import rich_progress

            check_old_spellings(a)
            exporting = logging.getLogger("glotta.export")  # what the exporters report on the way
            exporting.setLevel(logging.INFO)
            exporting.addHandler(logging.StreamHandler(sys.stdout))
            with rich_progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                               transient=True) as progress:  # on a terminal: that it runs, and for how long
                progress.add_task(f"export {name}", total=None)
                return run(a)

        p.set_defaults(func=call)
