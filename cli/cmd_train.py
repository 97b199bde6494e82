"""`glotta train plan|megatron|local`: Megatron-LM launches and the local trainer for small GPTs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from .common import USAGE_ERROR, console, err, fail, handles_errors, subcommands

OVERRIDES = [("--tensor-parallel", int), ("--pipeline-parallel", int), ("--micro-batch-size", int),
             ("--global-batch-size", int), ("--num-attention-heads", int), ("--train-samples", int),
             ("--lr", float), ("--mfu", float), ("--gpu", str)]


def _config(a: argparse.Namespace, nodes: int, gpus_per_node: int):
    """The validated configuration and its data-parallel size, or the exit code after printing what is wrong."""
    from pydantic import ValidationError

    from glotta.training.megatron_config import GPUS, ConfigError, load, validate

    overrides = {flag[2:].replace("-", "_"): getattr(a, flag[2:].replace("-", "_")) for flag, _ in OVERRIDES}
    try:
        cfg = load(a.config, overrides)
        if cfg.gpu not in GPUS:
            raise ConfigError(f"unknown GPU {cfg.gpu!r} (known: {', '.join(GPUS)})")
        return cfg, validate(cfg, nodes, gpus_per_node, a.allow_any_head_size)
    except ValidationError as e:
        err.print("[red]invalid configuration:[/]\n" + "\n".join(
            f"  {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))
    except ConfigError as e:
        err.print("[red]invalid configuration:[/]\n" + "\n".join(f"  {line}" for line in str(e).splitlines()))
    return None, USAGE_ERROR


def _plan_table(a: argparse.Namespace, cfg, dp: int) -> None:
    from glotta.training.megatron_config import GPUS
    from glotta.training.megatron_launch import plan

    p = plan(cfg, a.nodes, a.gpus_per_node, dp, a.tokens)
    mem = GPUS[cfg.gpu][1]
    t = Table(title=f"{cfg.name} on {a.nodes} node(s) × {a.gpus_per_node} {cfg.gpu}", show_header=False)
    t.add_row("parameters", f"{p.parameters / 1e9:.3f} B ({p.params_per_gpu / 1e6:,.0f} M per GPU, "
              f"TP {cfg.tensor_parallel} × PP {cfg.pipeline_parallel} × DP {dp})")
    t.add_row("padded vocabulary", f"{cfg.padded_vocab():,} (from {cfg.vocab_size:,})")
    t.add_row("head size", f"{cfg.head_size:g}")
    t.add_row("architecture", f"{cfg.family}: {cfg.num_attention_heads} heads, {cfg.query_groups} key/value heads, MLP "
              f"{cfg.ffn}{', untied output layer' if cfg.untie_embeddings_and_output_weights else ''}")
    t.add_row("memory per GPU", f"weights {p.weights_gb:.2f} + grads {p.grads_gb:.2f} + optimizer "
              f"{p.optimizer_gb:.2f} + activations {p.activations_gb:.2f} = {p.total_gb:.2f} GB of {mem} GB"
              + ("" if p.total_gb < mem else "  [red]does not fit[/]"))
    t.add_row("tokens per step", f"{p.tokens_per_step:,} ({cfg.global_batch_size} × {cfg.seq_length})")
    t.add_row("token budget", f"{p.tokens / 1e9:.1f} B tokens = {p.steps:,} steps")
    t.add_row("compute", f"6·N·T = {p.flops:.3g} FLOPs → {p.days:.1f} days on {p.gpus} GPUs at MFU {cfg.mfu:.0%} "
              f"({p.days * p.gpus / 8:.1f} 8-GPU node-days)")
    console.print(t)


def _plan(a: argparse.Namespace) -> int:
    cfg, dp = _config(a, a.nodes, a.gpus_per_node)
    if cfg is None:
        return dp
    _plan_table(a, cfg, dp)
    return 0


@handles_errors()
def _megatron(a: argparse.Namespace) -> int:
    from glotta.training.megatron_launch import launch_script, pretrain_args, time_limits

    cfg, dp = _config(a, a.nodes, a.gpus_per_node)
    if cfg is None:
        return dp
    _plan_table(a, cfg, dp)
    minutes, exit_minutes = time_limits(cfg, a.hours)
    args = pretrain_args(cfg, a.data_path, a.vocab_file, a.merge_file, a.save, a.tensorboard_dir, exit_minutes)
    script = launch_script(cfg, args, a.megatron, a.nodes, a.gpus_per_node, a.slurm, minutes)
    out = Path(a.output)
    out.write_text(script)
    out.chmod(0o755)
    run = f"sbatch {out}" if a.slurm else f"bash {out}"
    console.print(f"wrote {out}: run it with `{run}` (Megatron-LM checkout: {a.megatron}; the run exits and saves "
                  f"after {exit_minutes} min{f', Slurm limit {minutes} min' if a.slurm else ''})")
    return 0


def _local(a: argparse.Namespace) -> int:
    from glotta.training.local_trainer import train

    cfg, dp = _config(a, 1, 1)  # one process: world size 1
    if cfg is None:
        return dp
    try:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        losses = train(cfg, a.data_path[0], a.save, a.seed, a.max_steps, valid_prefix=a.valid_data_path)
    except (OSError, ValueError) as e:
        return fail(e)
    if losses:
        console.print(f"{len(losses)} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}; checkpoints and loss.png in "
                      f"{a.save}")
    else:
        console.print(f"nothing to do: {a.save} already holds the last step")
    return 0


def register(sub) -> None:
    tr = sub.add_parser("train", help="Megatron-LM launches (plan, megatron) and a local trainer for small GPTs")
    actions = subcommands(tr)

    def action(name: str, help: str, func) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help)
        p.add_argument("config", help="preset (meme-1.7b, demo-tiny, demo-tiny-llama) or YAML file (may name a `preset` to extend)")
        for flag, kind in OVERRIDES:
            p.add_argument(flag, type=kind, help="override the configuration's value"
                           + (" (V100-32GB, A100-80GB, H100-80GB, ...)" if flag == "--gpu" else ""))
        p.add_argument("--allow-any-head-size", action="store_true",
                       help="accept a head size the serving kernels lack")
        p.set_defaults(func=func)
        return p

    for p in (action("plan", "memory per GPU, steps and days of a run", _plan),
              action("megatron", "write the torchrun / Slurm script of a Megatron-LM run (and show its plan)",
                     _megatron)):
        p.add_argument("--nodes", type=int, default=1, help="nodes of the run")
        p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node")
        p.add_argument("--tokens", type=int, help="token budget for the time estimate (default: samples × seq)")
    m = actions.choices["megatron"]
    m.add_argument("--data-path", nargs="+", required=True, help="dataset prefixes (optionally weight prefix pairs)")
    m.add_argument("--vocab-file", required=True, help="the tokenizer's vocab.json")
    m.add_argument("--merge-file", required=True, help="the tokenizer's merges.txt")
    m.add_argument("--save", required=True, help="checkpoint directory (also --load: runs resume from it)")
    m.add_argument("--tensorboard-dir", help="TensorBoard logs")
    m.add_argument("--megatron", default="/opt/Megatron-LM", help="Megatron-LM checkout holding pretrain_gpt.py")
    m.add_argument("--slurm", action="store_true", help="write an sbatch script (srun + torchrun per node)")
    m.add_argument("--hours", type=float, help="Slurm time limit (default: the configuration's "
                   "exit_duration_in_mins + 10 min, else 24 h); --exit-duration-in-mins follows it")
    m.add_argument("--output", default="launch.sh", help="the script to write")
    loc = action("local", "train a small GPT on this machine (Megatron data and checkpoints)", _local)
    loc.add_argument("--data-path", nargs=1, required=True, help="training dataset prefix (.bin/.idx)")
    loc.add_argument("--save", required=True, help="checkpoint directory (the run resumes from it)")
    loc.add_argument("--valid-data-path", help="validation dataset prefix (instead of a split of --data-path)")
    loc.add_argument("--max-steps", type=int, help="stop after this step (the run resumes from --save)")
    loc.add_argument("--seed", type=int, default=1234, help="initialisation and sampling seed")
    loc.add_argument("--threads", type=int, help="CPU threads for torch")
