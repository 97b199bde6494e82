"""What a Megatron-LM run costs (the plan) and how it is started (arguments and launch script)."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from .megatron_config import GPUS, TrainConfig

SAVE_MARGIN_MIN = 10  # Megatron saves a checkpoint when --exit-duration-in-mins is reached: leave time for it


@dataclass
class Plan:
    parameters: int
    params_per_gpu: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    tokens_per_step: int
    steps: int
    tokens: int
    flops: float
    days: float
    gpus: int
    data_parallel: int

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.grads_gb + self.optimizer_gb + self.activations_gb


def parameters(cfg: TrainConfig) -> int:
    return cfg.architecture().parameters()


def plan(cfg: TrainConfig, nodes: int, gpus_per_node: int, dp: int, tokens: int | None = None) -> Plan:
    """Memory per GPU for mixed-precision Adam (2 B weights + 2 B grads + 12 B fp32 master and moments per
    parameter, spread over TP×PP) plus activations without recomputation (Korthikanti et al. 2022:
    s·b·h·(10 + 24/t + 5·a·s/(h·t)) bytes per layer; selective recomputation drops the attention term, full
    recomputation keeps 2·s·b·h per layer plus one layer's working set), and the time for the token budget from 6·N·T FLOPs at the
    stated MFU."""
    n = parameters(cfg)
    shards = cfg.tensor_parallel * cfg.pipeline_parallel
    per_gpu = n // shards
    bytes_w = 4 if cfg.precision == "fp32" else 2
    gb = 1024**3
    s, b, h, a, t = cfg.seq_length, cfg.micro_batch_size, cfg.hidden_size, cfg.num_attention_heads, cfg.tensor_parallel
    full_layer = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    kept = {"none": full_layer, "selective": s * b * h * (10 + 24 / t), "full": 2 * s * b * h}[cfg.recompute]
    layers_per_stage = cfg.num_layers // cfg.pipeline_parallel
    in_flight = cfg.pipeline_parallel  # 1F1B keeps up to PP micro-batches of activations on the first stage
    activations = kept * layers_per_stage * in_flight + (full_layer if cfg.recompute == "full" else 0)
    tokens_per_step = cfg.global_batch_size * cfg.seq_length
    tokens = tokens or cfg.train_samples * cfg.seq_length
    gpus = nodes * gpus_per_node
    flops = 6.0 * n * tokens
    peak = GPUS[cfg.gpu][0] * 1e12
    return Plan(
        parameters=n, params_per_gpu=per_gpu, weights_gb=per_gpu * bytes_w / gb, grads_gb=per_gpu * bytes_w / gb,
        optimizer_gb=per_gpu * (12 if bytes_w == 2 else 8) / gb, activations_gb=activations / gb,
        tokens_per_step=tokens_per_step, steps=math.ceil(tokens / tokens_per_step), tokens=tokens, flops=flops,
        days=flops / (gpus * peak * cfg.mfu) / 86400, gpus=gpus, data_parallel=dp,
    )


def time_limits(cfg: TrainConfig, hours: float | None) -> tuple[int, int]:
    """(Slurm time limit, `--exit-duration-in-mins`), in minutes, that always agree: the run stops and saves its
    checkpoint SAVE_MARGIN_MIN minutes before Slurm would kill it. Either comes from the other when only one is set."""
    if hours is None:
        exit_min = cfg.exit_duration_in_mins or 24 * 60 - SAVE_MARGIN_MIN
        return exit_min + SAVE_MARGIN_MIN, exit_min
    limit = round(hours * 60)
    exit_min = cfg.exit_duration_in_mins or limit - SAVE_MARGIN_MIN
    if exit_min <= 0 or exit_min > limit - SAVE_MARGIN_MIN:
        raise ValueError(f"exit_duration_in_mins {exit_min} does not fit a {hours:g} h Slurm limit: Megatron needs it "
                         f"at least {SAVE_MARGIN_MIN} min below the limit to save its last checkpoint "
                         f"(use --hours {math.ceil((exit_min + SAVE_MARGIN_MIN) / 60)} or lower the configuration's)")
    return limit, exit_min


def pretrain_args(cfg: TrainConfig, data_path: list[str], vocab_file: str, merge_file: str, save: str,
                  tensorboard_dir: str | None = None, exit_minutes: int | None = None) -> list[str]:
    """`pretrain_gpt.py` arguments, checkpointing and resuming from `save` (Megatron resumes from its latest)."""
    args = [
        "--num-layers", cfg.num_layers, "--hidden-size", cfg.hidden_size,
        "--num-attention-heads", cfg.num_attention_heads, "--seq-length", cfg.seq_length,
        "--max-position-embeddings", cfg.max_position_embeddings or cfg.seq_length,
        "--init-method-std", cfg.init_method_std,
        "--make-vocab-size-divisible-by", cfg.make_vocab_size_divisible_by,
        "--tensor-model-parallel-size", cfg.tensor_parallel, "--pipeline-model-parallel-size", cfg.pipeline_parallel,
        "--micro-batch-size", cfg.micro_batch_size, "--global-batch-size", cfg.global_batch_size,
        "--train-samples", cfg.train_samples,
        "--lr", cfg.lr, "--min-lr", cfg.min_lr, "--lr-decay-style", cfg.lr_decay_style,
        "--lr-warmup-samples", cfg.lr_warmup_samples, "--lr-decay-samples", cfg.lr_decay_samples or cfg.train_samples,
        "--weight-decay", cfg.weight_decay, "--clip-grad", cfg.clip_grad,
        "--adam-beta1", cfg.adam_beta1, "--adam-beta2", cfg.adam_beta2,
        "--data-path", *data_path, "--split", cfg.split,
        "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", vocab_file, "--merge-file", merge_file,
        "--save", save, "--load", save, "--save-interval", cfg.save_interval,
        "--log-interval", cfg.log_interval, "--eval-interval", cfg.eval_interval, "--eval-iters", cfg.eval_iters,
    ]
    args += architecture_args(cfg)
    if cfg.precision != "fp32":
        args.append(f"--{cfg.precision}")
    if cfg.recompute == "selective":
        args.append("--recompute-activations")
    elif cfg.recompute == "full":
        args += ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", 1]
    exit_minutes = exit_minutes or cfg.exit_duration_in_mins
    if exit_minutes:
        args += ["--exit-duration-in-mins", exit_minutes]
    if tensorboard_dir:
        args += ["--tensorboard-dir", tensorboard_dir]
    return [str(a) for a in args]


def architecture_args(cfg: TrainConfig) -> list:
    """Megatron's architecture flags, those that differ from its GPT defaults."""
    out: list = []
    if cfg.position_embedding_type != "learned_absolute":
        out += ["--position-embedding-type", cfg.position_embedding_type]
        if cfg.rotary_base != 10000:
            out += ["--rotary-base", cfg.rotary_base]
    if cfg.normalization != "LayerNorm":
        out += ["--normalization", cfg.normalization]
    if cfg.norm_epsilon != 1e-5:
        out += ["--norm-epsilon", cfg.norm_epsilon]
    if cfg.swiglu:
        out.append("--swiglu")
    if cfg.ffn_hidden_size:
        out += ["--ffn-hidden-size", cfg.ffn_hidden_size]
    if cfg.group_query_attention:
        out += ["--group-query-attention", "--num-query-groups", cfg.query_groups]
    if cfg.untie_embeddings_and_output_weights:
        out.append("--untie-embeddings-and-output-weights")
    if cfg.disable_bias_linear:
        out.append("--disable-bias-linear")
    return out


def launch_script(cfg: TrainConfig, args: list[str], megatron: str, nodes: int, gpus_per_node: int, slurm: bool,
                  minutes: int | None = None) -> str:
    """torchrun on one node; sbatch + srun + torchrun (c10d rendezvous) across nodes."""
    lines: list[list[str]] = []
    for a in args:  # one flag and its values per line
        if a.startswith("--") or not lines:
            lines.append([])
        lines[-1].append(shlex.quote(a))
    cmd = " \\\n    ".join(" ".join(line) for line in lines)
    script = f"{shlex.quote(megatron)}/pretrain_gpt.py"
    minutes = minutes or time_limits(cfg, None)[0]
    env = "export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron's requirement for sequence/tensor parallel overlap\n"
    if not slurm:
        if nodes != 1:
            raise ValueError("more than one node needs --slurm (or run this script on every node yourself)")
        return (f"#!/usr/bin/env bash\n# {cfg.name}: 1 node × {gpus_per_node} GPUs (generated by glotta train megatron)\n"
                f"set -euo pipefail\n{env}torchrun --standalone --nnodes 1 --nproc-per-node {gpus_per_node} "
                f"{script} \\\n    {cmd}\n")
    return (
        f"#!/usr/bin/env bash\n# {cfg.name}: {nodes} nodes × {gpus_per_node} GPUs (generated by glotta train megatron)\n"
        f"#SBATCH --job-name={cfg.name}\n#SBATCH --nodes={nodes}\n#SBATCH --ntasks-per-node=1\n"
        f"#SBATCH --gpus-per-node={gpus_per_node}\n#SBATCH --exclusive\n#SBATCH --time={minutes // 60}:{minutes % 60:02d}:00\n"
        f"#SBATCH --output=%x-%j.out\nset -euo pipefail\n{env}"
        "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n"
        f"srun torchrun --nnodes \"$SLURM_NNODES\" --nproc-per-node {gpus_per_node} \\\n"
        "    --rdzv-id \"$SLURM_JOB_ID\" --rdzv-backend c10d --rdzv-endpoint \"$MASTER_ADDR:29500\" \\\n"
        f"    {script} \\\n    {cmd}\n"
    )
