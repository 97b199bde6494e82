"""`glotta export TARGET`: every exporter behind one small protocol, each with its own options and help.

Targets that read a Megatron checkpoint: `hf`, `onnx`, `sparsify`, `fastertransformer`, `trtllm`; `tensorrt` reads
an ONNX model; `plan` sizes the serving of any model; `verify-24` checks any file for 2:4 sparsity.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Protocol

from rich.table import Table

from glotta.core.errors import invalid

from .common import console, fail, handles_errors


class Exporter(Protocol):
    name: str
    help: str

    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...

    def run(self, a: argparse.Namespace) -> int: ...


def tokenizer_dir(a: argparse.Namespace) -> Path:
    """The tokenizer an export ships and takes its special tokens from: --tokenizer, else the vocab/merge files the
    checkpoint's Megatron args name (when they exist here), else one saved beside the checkpoint; never guessed."""
    if a.tokenizer:
        return Path(a.tokenizer)
    named = _tokenizer_from_args(Path(a.source))
    if named is not None:
        return named
    if (Path(a.source) / "tokenizer.json").is_file():
        return Path(a.source)
    raise invalid(f"no tokenizer for {a.source}: pass --tokenizer DIR (the folder holding the model's tokenizer.json, "
                  "as written by `glotta tokenizer train`); the checkpoint's args name no vocab/merge files found here",
                  "tokenizer")


def _tokenizer_from_args(source: Path) -> Path | None:
    """A tokenizer.json built from the GPT-2 vocab.json + merges.txt that the checkpoint was trained with."""
    import shutil

    from glotta.core.megatron.checkpoint import is_checkpoint
    from glotta.core.megatron.reader import checkpoint_args
    from glotta.core.paths import cache_dir, content_digest

    if not is_checkpoint(source):
        return None
    args = checkpoint_args(source)
    vocab, merges = getattr(args, "vocab_file", None), getattr(args, "merge_file", None)
    if not (vocab and merges and Path(vocab).is_file() and Path(merges).is_file()):
        return None
    from tokenizers import ByteLevelBPETokenizer

    out = cache_dir() / "tokenizers" / content_digest([vocab, merges])
    if not (out / "tokenizer.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        ByteLevelBPETokenizer(vocab, merges).save(str(out / "tokenizer.json.tmp"))
        shutil.copy(vocab, out / "vocab.json")
        shutil.copy(merges, out / "merges.txt")
        (out / "tokenizer.json.tmp").replace(out / "tokenizer.json")
    console.print(f"tokenizer: the checkpoint's --vocab-file {vocab} and --merge-file {merges}")
    return out


def checkpoint_arguments(p: argparse.ArgumentParser, tokenizer_help: str) -> None:
    p.add_argument("source", help="Megatron checkpoint directory (any layout, tensor/pipeline parallel)")
    p.add_argument("--output", required=True, help="the folder to write")
    p.add_argument("--tokenizer", help=tokenizer_help + " (default: a tokenizer.json beside the checkpoint); its "
                   "size also trims Megatron's vocabulary padding")


def read_checkpoint(a: argparse.Namespace, tokenizer: Path | None):
    from glotta.core.megatron.reader import read
    from glotta.core.tokenizer import Tokenizer

    return read(a.source, Tokenizer(tokenizer).vocab_size if tokenizer else None)


class Plan:
    name, help = "plan", "serving plan: weights per precision, KV cache, minimum tensor parallel per GPU"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("source", nargs="?", help="Megatron checkpoint directory, training preset (meme-1.7b) or YAML")
        p.add_argument("--params", type=float, help="parameter count instead of a config, e.g. 175e9")
        p.add_argument("--params-label", help="name shown for --params")
        p.add_argument("--num-layers", type=int, help="with --params: for the KV cache")
        p.add_argument("--hidden-size", type=int, help="with --params: for the KV cache")
        p.add_argument("--batch", type=int, default=1, help="sequences in the KV cache")
        p.add_argument("--seq-length", type=int, default=2048, help="tokens per sequence for the KV cache")
        p.add_argument("--usable", type=float, default=0.9, help="fraction of GPU memory available to the model")

    def _shape(self, a: argparse.Namespace):
        from glotta.core.megatron.checkpoint import is_checkpoint
        from glotta.core.megatron.reader import checkpoint_args
        from glotta.core.megatron.shape import shape_from_args
        from glotta.export.plan import ModelShape
        from glotta.training.megatron_config import load as load_config
        from glotta.training.megatron_launch import parameters

        if a.params:
            return a.params_label or f"{a.params / 1e9:g} B parameters", ModelShape(int(a.params), a.num_layers,
                                                                                       a.hidden_size)
        if is_checkpoint(a.source):
            s = shape_from_args(checkpoint_args(a.source))
            return (f"{a.source} ({s.family}, {s.layers} × {s.hidden}, {s.groups} KV heads)",
                    ModelShape(s.parameters, s.layers, s.hidden, s.groups * s.head_size))
        cfg = load_config(a.source)
        kv = cfg.query_groups * cfg.hidden_size // cfg.num_attention_heads
        return (f"{cfg.name} ({cfg.num_layers} × {cfg.hidden_size}, {cfg.query_groups} KV heads)",
                ModelShape(parameters(cfg), cfg.num_layers, cfg.hidden_size, kv))

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.export.plan import GPU_MEMORY_GIB, kv_bytes_per_token, min_tensor_parallel, weights_gib

        if not (a.source or a.params):
            return fail("give a checkpoint, a training preset / YAML config, or --params N")
        label, shape = self._shape(a)
        w = weights_gib(shape.parameters)
        t = Table(title=f"{label}: weights")
        for col in ("precision", "GiB", "formula"):
            t.add_column(col, justify="right")
        for precision, gib in w.items():
            t.add_row(precision, f"{gib:,.2f}", f"{shape.parameters:,} × bytes / 1024³")
        console.print(t)
        per_token = kv_bytes_per_token(shape)
        kv_gib = 0.0
        if per_token:
            kv_gib = per_token * a.batch * a.seq_length / 1024**3
            console.print(f"KV cache (fp16): {per_token / 1024**2:.3f} MiB per token; batch {a.batch} × "
                          f"{a.seq_length} tokens = {kv_gib:,.2f} GiB")
        t2 = Table(title=f"minimum tensor parallel (weights + KV cache within {a.usable:.0%} of memory)")
        t2.add_column("GPU")
        for precision in w:
            t2.add_column(precision, justify="right")
        for gpu, mem in GPU_MEMORY_GIB.items():
            cells = []
            for gib in w.values():
                tp = min_tensor_parallel(gib, kv_gib, mem, a.usable)
                cells.append(str(tp) if tp else "> 64")
            t2.add_row(gpu, *cells)
        console.print(t2)
        console.print("GiB = 1024³ bytes (the source talk's 325.96 \"GB\" for 175 B fp16 weights is GiB: "
                      "350 GB in 10⁹ bytes)")
        return 0


class HuggingFace:
    name, help = "hf", "Megatron checkpoint → Hugging Face GPT-2 folder (safetensors + config + tokenizer)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        checkpoint_arguments(p, "folder with tokenizer.json copied beside the model")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.core.errors import GlottaError
        from glotta.core.megatron.hf import to_hf
        from glotta.core.tokenizer import copy_tokenizer_files

        try:  # a Hugging Face folder may leave the tokenizer out; with it, eos/bos come from it
            tok = tokenizer_dir(a)
        except GlottaError:
            tok = None
        merged, shape = read_checkpoint(a, tok)
        out = Path(a.output)
        to_hf(merged, shape, tok).save_pretrained(out, safe_serialization=True)
        if tok is not None:
            copy_tokenizer_files(tok, out)
        console.print(f"wrote {out} ({'LlamaForCausalLM' if shape.family == 'llama' else 'GPT2LMHeadModel'}, "
                      f"safetensors + config{' + tokenizer' if tok else ''}): {shape.summary()}")
        if tok is None:
            console.print("no tokenizer found (--tokenizer, the checkpoint's vocab/merge files, or beside it): the "
                          "folder has no tokenizer and no eos id, so it cannot be served as it is")
        return 0


class Onnx:
    name, help = "onnx", ("Megatron checkpoint or Hugging Face folder (GPT-2, Llama) → served model folder (ONNX, "
                          "tokenizer, Triton config)")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        checkpoint_arguments(p, "the served model's tokenizer")
        p.add_argument("--fp16-storage", action="store_true", help="store weights in fp16 (half the file)")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.core.megatron.hf import to_hf
        from glotta.core.model_folder import ModelFolder
        from glotta.core.tokenizer import copy_tokenizer_files
        from glotta.export.onnx_export import export_gpt2_onnx
        from glotta.server.engine.hf_import import convert_hf_folder, is_hf_folder
        from glotta.server.triton.config_writers.cpu import write_model

        if is_hf_folder(a.source):  # a Hugging Face GPT-2 or Llama folder: weights, tokenizer and its special tokens
            out = convert_hf_folder(a.source, a.output)
            console.print(f"wrote {out}: serve it with `glotta serve --model {out}`")
            return 0
        tok = tokenizer_dir(a)
        merged, shape = read_checkpoint(a, tok)
        out = Path(a.output)
        if shape.family == "llama":  # the engine's fused graph, through the one Hugging Face conversion
            if a.fp16_storage:
                return fail("--fp16-storage is for the GPT-2 exchange graph; a Llama is served as the fused fp32 graph")
            with tempfile.TemporaryDirectory() as tmp:
                to_hf(merged, shape, tok).save_pretrained(tmp, safe_serialization=True)
                copy_tokenizer_files(tok, Path(tmp))
                convert_hf_folder(tmp, out, source=a.source)
            console.print(f"wrote {out}: serve it with `glotta serve --model {out}` (add --int8 for the INT8 engine)")
            return 0
        export_gpt2_onnx(to_hf(merged, shape), out / "1" / "model.onnx", fp16_weights=a.fp16_storage)
        ModelFolder.write(out, {"architecture": "gpt2", "vocab_size": shape.vocab, "n_positions": shape.positions,
                                "n_layer": shape.layers, "n_embd": shape.hidden, "n_head": shape.heads,
                                "source": str(a.source)}, tok)
        write_model(out)  # Triton config.pbtxt + 1/model.py: the folder is served by `glotta serve` and by Triton
        console.print(f"wrote {out}: serve it with `glotta serve --model {out}` (add --int8 for the INT8 engine)")
        return 0


class Sparsify:
    name, help = "sparsify", "prune a Megatron checkpoint 2:4 (magnitude) and report the perplexity before and after"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("source", help="Megatron checkpoint directory")
        p.add_argument("--output", required=True, help="the pruned checkpoint directory")
        p.add_argument("--data-path", help="validation dataset prefix (.bin/.idx) for the perplexity")
        p.add_argument("--seq-length", type=int, default=2048, help="sample length for the perplexity")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.core.megatron import checkpoint
        from glotta.core.megatron.hf import to_hf
        from glotta.core.megatron.reader import read
        from glotta.export.sparsity import check, hf_matrices, perplexity, sparsify_hf

        merged, shape = read(a.source)
        if shape.family != "gpt2":
            return fail("2:4 sparsity serves the FasterTransformer / TensorRT GPT path: GPT-2 family checkpoints only")
        model = to_hf(merged, shape)
        before = perplexity(model, a.data_path, a.seq_length) if a.data_path else None
        pruned = sparsify_hf(model)
        after = perplexity(model, a.data_path, a.seq_length) if a.data_path else None
        args = argparse.Namespace(num_layers=shape.layers, hidden_size=shape.hidden, num_attention_heads=shape.heads,
                                  padded_vocab_size=shape.vocab, max_position_embeddings=shape.positions,
                                  tensor_model_parallel_size=1, pipeline_model_parallel_size=1, sparsity="2:4")
        checkpoint.save(a.output, 1, model, args, {}, {}, {})
        r = check(hf_matrices(model))
        console.print(f"pruned {pruned} matrices 2:4 ({r.zero_fraction:.1%} zeros, verifier: "
                      f"{'ok' if r.ok else 'FAILED'}) → {a.output}")
        if before is not None:
            console.print(f"validation perplexity on {a.data_path}: {before:.2f} dense → {after:.2f} pruned "
                          f"(before any recovery fine-tuning: `glotta train local` on the pruned checkpoint)")
        return 0


class Verify24:
    name, help = "verify-24", "check that a checkpoint, Hugging Face folder or ONNX file is 2:4 sparse"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("source", help="Megatron checkpoint, Hugging Face folder or ONNX file")

    @handles_errors()
    def run(self, a: argparse.Namespace) -> int:
        from glotta.export.sparsity import verify_path

        r = verify_path(a.source)
        verdict = "[green]2:4 sparse[/]" if r.ok else "[red]not 2:4 sparse[/]"
        console.print(f"{a.source}: {verdict} — {r.tensors} matrices, {r.groups:,} groups, {r.bad_groups:,} with "
                      f"more than 2 non-zeros, {r.zero_fraction:.1%} zeros")
        for o in (r.offenders or [])[:10]:
            console.print(f"  {o}", markup=False)
        return 0 if r.ok else 1


def exporters() -> list[Exporter]:
    from .export_engines import FasterTransformer, TensorRT, TrtLLM

    return [Plan(), HuggingFace(), Onnx(), Sparsify(), Verify24(), FasterTransformer(), TensorRT(), TrtLLM()]


def register(sub) -> None:
    e = sub.add_parser("export", help="serving plan; Megatron checkpoints → Hugging Face / ONNX / FasterTransformer / "
                       "TensorRT(-LLM)")
    targets = e.add_subparsers(dest="target", required=True, metavar="TARGET")
    for exporter in exporters():
        p = targets.add_parser(exporter.name, help=exporter.help, description=exporter.help)
        exporter.add_arguments(p)
        p.set_defaults(func=exporter.run)
