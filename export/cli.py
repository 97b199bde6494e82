"""`glotta export plan`: memory for weights and KV cache, and the minimum tensor parallelism per GPU type."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)  # messages whole: no wrapping in the middle of a path
err = Console(stderr=True, soft_wrap=True)


def _shape(a: argparse.Namespace):
    from .plan import ModelShape

    if a.params:
        return a.params_label or f"{a.params / 1e9:g} B parameters", ModelShape(int(a.params), a.num_layers,
                                                                                   a.hidden_size)
    from pathlib import Path

    from glotta.training.megatron_config import load
    from glotta.training.megatron_launch import gpt_parameters, parameters

    if (Path(a.source) / "latest_checkpointed_iteration.txt").is_file():  # a Megatron checkpoint directory
        from glotta.training import megatron_checkpoint

        args = megatron_checkpoint.load(megatron_checkpoint.latest(a.source))["args"]
        h, layers = args.hidden_size, args.num_layers
        n = gpt_parameters(layers, h, args.padded_vocab_size, args.max_position_embeddings)
        return f"{a.source} ({layers} × {h})", ModelShape(n, layers, h)
    cfg = load(a.source)
    return f"{cfg.name} ({cfg.num_layers} × {cfg.hidden_size})", ModelShape(parameters(cfg), cfg.num_layers,
                                                                             cfg.hidden_size)


def _plan(a: argparse.Namespace) -> int:
    from .plan import GPU_MEMORY_GB, kv_bytes_per_token, min_tensor_parallel, weights_gb

    if not (a.source or a.params):
        err.print("[red]error:[/] give a training preset / YAML config, or --params N")
        return 2
    try:
        label, shape = _shape(a)
    except (ValueError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    w = weights_gb(shape.parameters)
    t = Table(title=f"{label}: weights")
    for col in ("precision", "GB", "formula"):
        t.add_column(col, justify="right")
    for precision, gb in w.items():
        t.add_row(precision, f"{gb:,.2f}", f"{shape.parameters:,} × bytes / 1024³")
    console.print(t)
    per_token = kv_bytes_per_token(shape)
    kv_gb = 0.0
    if per_token:
        kv_gb = per_token * a.batch * a.seq_length / 1024**3
        console.print(f"KV cache (fp16): {per_token / 1024**2:.3f} MB per token; batch {a.batch} × {a.seq_length} "
                      f"tokens = {kv_gb:,.2f} GB")
    t2 = Table(title=f"minimum tensor parallel (weights + KV cache within {a.usable:.0%} of memory)")
    t2.add_column("GPU")
    for precision in w:
        t2.add_column(precision, justify="right")
    for gpu, mem in GPU_MEMORY_GB.items():
        cells = []
        for gb in w.values():
            tp = min_tensor_parallel(gb, kv_gb, mem, a.usable)
            cells.append(str(tp) if tp else "> 64")
        t2.add_row(gpu, *cells)
    console.print(t2)
    return 0


def _convert(a: argparse.Namespace) -> int:
    """`export hf` and `export onnx` from a Megatron checkpoint."""
    import json
    import shutil
    from pathlib import Path

    from glotta.training.tokenizer import copy_files

    from .megatron_reader import CheckpointError, read, to_hf

    if not (a.source and a.output):
        err.print(f"[red]error:[/] `glotta export {a.action}` needs CHECKPOINT and --output")
        return 2
    tok_dir = Path(a.tokenizer) if a.tokenizer else None
    vocab = a.vocab_size
    if tok_dir is not None and vocab is None:
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size()
    try:
        merged, shape = read(a.source, vocab)
    except (CheckpointError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    model = to_hf(merged, shape)
    out = Path(a.output)
    if a.action == "hf":
        model.save_pretrained(out, safe_serialization=True)
        if tok_dir is not None:
            copy_files(tok_dir, out)
        summary = {k: v for k, v in shape.items() if k != "args"}
        console.print(f"wrote {out} (safetensors + config{' + tokenizer' if tok_dir else ''}): {summary}")
        return 0
    from glotta.server.triton.configs import write_model

    from .onnx_export import export_gpt2_onnx

    if tok_dir is None:
        err.print("[red]error:[/] `glotta export onnx` needs --tokenizer DIR (the served model's tokenizer)")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    export_gpt2_onnx(model, out / "1" / "model.onnx", fp16_weights=a.fp16_storage)
    shutil.copy(tok_dir / "tokenizer.json", out / "tokenizer.json")
    meta = {"name": out.name, "architecture": "gpt2", "vocab_size": shape["vocab"], "n_positions": shape["positions"],
            "n_layer": shape["layers"], "n_embd": shape["hidden"], "n_head": shape["heads"],
            "source": str(a.source)}
    (out / "glotta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_model(out)  # Triton config.pbtxt + 1/model.py: the folder is served by `glotta serve` and by Triton
    console.print(f"wrote {out}: serve it with `glotta serve --model {out}` (add --int8 for the INT8 engine)")
    return 0


def _sparsify(a: argparse.Namespace) -> int:
    """`export sparsify` (prune a checkpoint 2:4, report perplexity) and `export verify-24` (check any file)."""
    from .megatron_reader import CheckpointError, read, to_hf
    from .sparsity import hf_matrices, perplexity, sparsify_hf, verify_path

    try:
        if a.action == "verify-24":
            r = verify_path(a.source)
            verdict = "[green]2:4 sparse[/]" if r.ok else "[red]not 2:4 sparse[/]"
            console.print(f"{a.source}: {verdict} — {r.tensors} matrices, {r.groups:,} groups, {r.bad_groups:,} with "
                          f"more than 2 non-zeros, {r.zero_fraction:.1%} zeros")
            for o in (r.offenders or [])[:10]:
                console.print(f"  {o}")
            return 0 if r.ok else 1
        if not a.output:
            err.print("[red]error:[/] `glotta export sparsify` needs --output (a checkpoint directory)")
            return 2
        merged, shape = read(a.source)
        model = to_hf(merged, shape)
        before = perplexity(model, a.data_path, a.seq_length) if a.data_path else None
        pruned = sparsify_hf(model)
        after = perplexity(model, a.data_path, a.seq_length) if a.data_path else None
    except (CheckpointError, OSError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    from glotta.training import megatron_checkpoint

    args = argparse.Namespace(num_layers=shape["layers"], hidden_size=shape["hidden"],
                              num_attention_heads=shape["heads"], padded_vocab_size=shape["vocab"],
                              max_position_embeddings=shape["positions"], tensor_model_parallel_size=1,
                              pipeline_model_parallel_size=1, sparsity="2:4")
    megatron_checkpoint.save(a.output, 1, model, args, {}, {}, {})
    from .sparsity import check

    r = check(hf_matrices(model))
    console.print(f"pruned {pruned} matrices 2:4 ({r.zero_fraction:.1%} zeros, verifier: {'ok' if r.ok else 'FAILED'})"
                  f" → {a.output}")
    if before is not None:
        console.print(f"validation perplexity on {a.data_path}: {before:.2f} dense → {after:.2f} pruned "
                      f"(before any recovery fine-tuning: `glotta train local` on the pruned checkpoint)")
    return 0


def add_parsers(sub) -> None:
    from .engine_cli import HANDLERS, add_arguments

    e = sub.add_parser("export", help="serving plan; Megatron checkpoints → Hugging Face / ONNX / FasterTransformer / "
                       "TensorRT(-LLM)")
    e.add_argument("action", choices=["plan", "hf", "onnx", "sparsify", "verify-24", *HANDLERS])
    e.add_argument("source", nargs="?", help="Megatron checkpoint directory, training preset (meme-1.7b) or YAML")
    e.add_argument("--params", type=float, help="parameter count instead of a config, e.g. 175e9")
    e.add_argument("--params-label")
    e.add_argument("--num-layers", type=int, help="with --params: for the KV cache")
    e.add_argument("--hidden-size", type=int, help="with --params: for the KV cache")
    e.add_argument("--batch", type=int, default=1, help="plan: sequences in the KV cache")
    e.add_argument("--seq-length", type=int, default=2048, help="plan: tokens per sequence for the KV cache; "
                   "sparsify: sample length for the perplexity")
    e.add_argument("--usable", type=float, default=0.9, help="fraction of GPU memory available to the model")
    e.add_argument("--output", help="hf / onnx: output folder (onnx: a model_repository folder)")
    e.add_argument("--tokenizer", help="hf / onnx: folder with tokenizer.json (also trims the vocabulary padding)")
    e.add_argument("--vocab-size", type=int, help="true vocabulary size, to drop Megatron's padding")
    e.add_argument("--fp16-storage", action="store_true", help="onnx: store weights in fp16 (half the file)")
    e.add_argument("--data-path", help="sparsify: validation dataset prefix (.bin/.idx) for the perplexity")
    add_arguments(e)
    handlers = {"plan": _plan, "hf": _convert, "onnx": _convert, "sparsify": _sparsify, "verify-24": _sparsify,
                **HANDLERS}
    e.set_defaults(func=lambda a: handlers[a.action](a))
