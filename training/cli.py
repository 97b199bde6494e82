"""`glotta tokenizer train` and `glotta data convert|merge|inspect`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)  # messages whole: no wrapping in the middle of a path
err = Console(stderr=True, soft_wrap=True)


def _tokenizer(a: argparse.Namespace) -> int:
    from .tokenizer import train

    try:
        r = train(a.input, a.vocab_size, Path(a.output), a.json_key, a.max_chars, a.heldout_fraction, a.baseline)
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    t = Table(title=f"fertility on {r['heldout_documents']} held-out documents (lower is better)")
    for col in ("tokenizer", "tokens/word", "tokens/char", "chars/token"):
        t.add_column(col, justify="right")
    rows = [("trained", r["trained"])] + ([(r["baseline"]["path"], r["baseline"])] if "baseline" in r else [])
    for name, f in rows:
        t.add_row(name, f"{f['tokens_per_word']:.3f}", f"{f['tokens_per_char']:.4f}", f"{f['chars_per_token']:.2f}")
    console.print(t)
    if "baseline" in r:
        console.print(f"the baseline needs {r['baseline']['tokens'] / r['trained']['tokens']:.2f}× the tokens")
    console.print(f"wrote {a.output}/tokenizer.json, vocab.json, merges.txt, fertility.json "
                  f"({r['documents']:,} documents, {r['characters']:,} characters sampled)")
    return 0


def _data(a: argparse.Namespace) -> int:
    from .convert import convert
    from .megatron_dataset import DatasetError, MegatronDataset, merge

    try:
        if a.action == "convert":
            r = convert(a.input, a.output_prefix, a.vocab_file, a.merge_file, a.tokenizer_json, tuple(a.json_keys),
                        a.append_eod, a.workers)
            for path, line, reason in r.bad_lines[:50]:
                err.print(f"[yellow]skipped[/] {path}:{line}: {reason}")
            if len(r.bad_lines) > 50:
                err.print(f"[yellow]… and {len(r.bad_lines) - 50} more skipped lines[/]")
            console.print(f"{r.documents:,} documents, {r.tokens:,} tokens → {', '.join(r.outputs)} (.bin/.idx); "
                          f"{len(r.bad_lines)} malformed lines skipped")
        elif a.action == "merge":
            merge(a.inputs, a.output_prefix)
            console.print(f"merged {len(a.inputs)} datasets into {a.output_prefix}")
        else:
            ds = MegatronDataset(a.prefix)
            console.print(f"{a.prefix}: {len(ds):,} documents, {ds.num_tokens:,} tokens, dtype {ds.dtype}")
            if a.doc is not None:
                if not 0 <= a.doc < len(ds):
                    raise IndexError(f"document {a.doc} out of range (0..{len(ds) - 1})")
                ids = ds[a.doc].tolist()
                console.print(f"document {a.doc}: {len(ids)} tokens")
                if a.tokenizer:
                    from .tokenizer import load_any

                    console.print(load_any(a.tokenizer).decode(ids, skip_special_tokens=False), markup=False)
                else:
                    console.print(ids)
    except (OSError, ValueError, IndexError, DatasetError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    return 0


def _overrides(a: argparse.Namespace) -> dict:
    return {"tensor_parallel": a.tensor_parallel, "pipeline_parallel": a.pipeline_parallel,
            "micro_batch_size": a.micro_batch_size, "global_batch_size": a.global_batch_size,
            "num_attention_heads": a.num_attention_heads, "train_samples": a.train_samples, "lr": a.lr,
            "gpu": a.gpu, "mfu": a.mfu}


def _train(a: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .megatron_config import GPUS, ConfigError, load, validate
    from .megatron_launch import launch_script, plan, pretrain_args

    try:
        cfg = load(a.config, _overrides(a))
        if cfg.gpu not in GPUS:
            raise ConfigError(f"unknown GPU {cfg.gpu!r} (known: {', '.join(GPUS)})")
        local = a.action == "local"  # one process: world size 1
        dp = validate(cfg, 1 if local else a.nodes, 1 if local else a.gpus_per_node, a.allow_any_head_size)
    except ValidationError as e:
        err.print("[red]invalid configuration:[/]\n" + "\n".join(
            f"  {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))
        return 2
    except ConfigError as e:
        err.print("[red]invalid configuration:[/]\n" + "\n".join(f"  {line}" for line in str(e).splitlines()))
        return 2
    if a.action == "local":
        return _train_local(a, cfg)
    p = plan(cfg, a.nodes, a.gpus_per_node, dp, a.tokens)
    mem = GPUS[cfg.gpu][1]
    t = Table(title=f"{cfg.name} on {a.nodes} node(s) × {a.gpus_per_node} {cfg.gpu}", show_header=False)
    t.add_row("parameters", f"{p.parameters / 1e9:.3f} B ({p.params_per_gpu / 1e6:,.0f} M per GPU, "
              f"TP {cfg.tensor_parallel} × PP {cfg.pipeline_parallel} × DP {dp})")
    t.add_row("padded vocabulary", f"{cfg.padded_vocab():,} (from {cfg.vocab_size:,})")
    t.add_row("head size", f"{cfg.head_size:g}")
    t.add_row("memory per GPU", f"weights {p.weights_gb:.2f} + grads {p.grads_gb:.2f} + optimizer "
              f"{p.optimizer_gb:.2f} + activations {p.activations_gb:.2f} = {p.total_gb:.2f} GB of {mem} GB"
              + ("" if p.total_gb < mem else "  [red]does not fit[/]"))
    t.add_row("tokens per step", f"{p.tokens_per_step:,} ({cfg.global_batch_size} × {cfg.seq_length})")
    t.add_row("token budget", f"{p.tokens / 1e9:.1f} B tokens = {p.steps:,} steps")
    t.add_row("compute", f"6·N·T = {p.flops:.3g} FLOPs → {p.days:.1f} days on {p.gpus} GPUs at MFU {cfg.mfu:.0%} "
              f"({p.days * p.gpus / 8:.1f} 8-GPU node-days)")
    console.print(t)
    if a.action == "megatron":
        if not (a.data_path and a.vocab_file and a.merge_file and a.save):
            err.print("[red]error:[/] `glotta train megatron` needs --data-path, --vocab-file, --merge-file, --save")
            return 2
        args = pretrain_args(cfg, a.data_path, a.vocab_file, a.merge_file, a.save, a.tensorboard_dir)
        try:
            script = launch_script(cfg, args, a.megatron, a.nodes, a.gpus_per_node, a.slurm, a.hours)
        except ValueError as e:
            err.print(f"[red]error:[/] {e}")
            return 2
        out = Path(a.output)
        out.write_text(script)
        out.chmod(0o755)
        run = f"sbatch {out}" if a.slurm else f"bash {out}"
        console.print(f"wrote {out}: run it with `{run}` (Megatron-LM checkout: {a.megatron})")
    return 0


def _train_local(a: argparse.Namespace, cfg) -> int:
    from .local_trainer import train

    if not (a.data_path and a.save):
        err.print("[red]error:[/] `glotta train local` needs --data-path PREFIX and --save DIR")
        return 2
    try:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        losses = train(cfg, a.data_path[0], a.save, a.seed, a.max_steps, valid_prefix=a.valid_data_path)
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    if losses:
        console.print(f"{len(losses)} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}; checkpoints and loss.png in "
                      f"{a.save}")
    else:
        console.print(f"nothing to do: {a.save} already holds the last step")
    return 0


def add_parsers(sub) -> None:
    tr = sub.add_parser("train", help="Megatron-LM launches (plan, megatron) and a local trainer for small GPTs")
    tr.add_argument("action", choices=["plan", "megatron", "local"])
    tr.add_argument("config", help="preset (meme-1.7b, demo-tiny) or YAML file (may name a `preset` to extend)")
    tr.add_argument("--nodes", type=int, default=1)
    tr.add_argument("--gpus-per-node", type=int, default=8)
    tr.add_argument("--tokens", type=int, help="token budget for the time estimate (default: train samples × seq)")
    for flag, kind in [("--tensor-parallel", int), ("--pipeline-parallel", int), ("--micro-batch-size", int),
                       ("--global-batch-size", int), ("--num-attention-heads", int), ("--train-samples", int),
                       ("--lr", float), ("--mfu", float)]:
        tr.add_argument(flag, type=kind, help="override the configuration's value")
    tr.add_argument("--gpu", help="GPU type for memory and time (V100-32GB, A100-80GB, H100-80GB, ...)")
    tr.add_argument("--allow-any-head-size", action="store_true", help="accept a head size the serving kernels lack")
    tr.add_argument("--data-path", nargs="+", help="megatron: dataset prefixes (optionally weight prefix pairs)")
    tr.add_argument("--vocab-file")
    tr.add_argument("--merge-file")
    tr.add_argument("--save", help="megatron: checkpoint directory (also --load: runs resume from it)")
    tr.add_argument("--tensorboard-dir")
    tr.add_argument("--megatron", default="/opt/Megatron-LM", help="Megatron-LM checkout holding pretrain_gpt.py")
    tr.add_argument("--slurm", action="store_true", help="write an sbatch script (srun + torchrun per node)")
    tr.add_argument("--hours", type=int, default=24, help="Slurm time limit")
    tr.add_argument("--output", default="launch.sh")
    tr.add_argument("--max-steps", type=int, help="local: stop after this step (the run resumes from --save)")
    tr.add_argument("--seed", type=int, default=1234)
    tr.add_argument("--valid-data-path", help="local: validation dataset prefix (instead of a split of --data-path)")
    tr.add_argument("--threads", type=int, help="local: CPU threads for torch")
    tr.set_defaults(func=_train)

    t = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your language")
    t.add_argument("action", choices=["train"])
    t.add_argument("--input", action="append", required=True, help="JSONL(.gz) files or globs (repeatable)")
    t.add_argument("--vocab-size", type=int, default=50257)
    t.add_argument("--output", required=True)
    t.add_argument("--json-key", default="text")
    t.add_argument("--max-chars", type=int, default=200_000_000, help="characters sampled for training")
    t.add_argument("--heldout-fraction", type=float, default=0.01)
    t.add_argument("--baseline", help="tokenizer to compare fertility with (tokenizer.json or vocab+merges folder)")
    t.set_defaults(func=_tokenizer)

    from .data.cli import STAGE_ACTIONS, add_arguments

    d = sub.add_parser("data", help="corpus preparation (prepare, or one stage alone) and Megatron datasets "
                       "(convert JSONL, merge shards, inspect)")
    d.add_argument("action", choices=["prepare", *STAGE_ACTIONS, "step", "convert", "merge", "inspect"])
    d.add_argument("prefix", nargs="?", help="inspect: dataset prefix (without .bin/.idx)")
    d.add_argument("--input", action="append", help="prepare / convert: input files or globs (repeatable)")
    d.add_argument("--inputs", nargs="+", help="merge: dataset prefixes")
    d.add_argument("--output-prefix")
    d.add_argument("--vocab-file")
    d.add_argument("--merge-file")
    d.add_argument("--tokenizer-json", help="instead of --vocab-file/--merge-file")
    d.add_argument("--json-keys", nargs="+", default=["text"])
    d.add_argument("--append-eod", action="store_true")
    d.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    d.add_argument("--doc", type=int, help="inspect: print document N")
    d.add_argument("--tokenizer", help="inspect: decode with this tokenizer")
    add_arguments(d)
    d.set_defaults(func=_checked)


def _checked(a: argparse.Namespace) -> int:
    if a.action not in ("convert", "merge", "inspect"):
        from .data import cli as prep

        return prep.step(a) if a.action == "step" else prep.prepare(a)
    need = {"convert": ("input", "output_prefix"), "merge": ("inputs", "output_prefix"), "inspect": ("prefix",)}
    missing = [n for n in need[a.action] if not getattr(a, n)]
    if missing:
        err.print(f"[red]error:[/] `glotta data {a.action}` needs --{missing[0].replace('_', '-')}")
        return 2
    return _data(a)

