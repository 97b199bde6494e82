"""Typed Megatron-LM training configurations: presets, validation before any GPU-hour is spent, `pretrain_gpt.py`
arguments, launch scripts (torchrun on one node, Slurm sbatch + srun on many) and the resource plan.

Megatron-LM itself is the distributed engine; this module only prepares and checks its launch.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

# Head sizes FasterTransformer / TensorRT-LLM decoder attention kernels support (masked multi-head attention).
SERVING_HEAD_SIZES = (32, 48, 64, 80, 96, 104, 112, 128, 144, 160, 192, 224, 256)
GPUS = {  # dense fp16/bf16 tensor-core peak (TFLOP/s), memory (GB)
    "V100-16GB": (125, 16), "V100-32GB": (125, 32), "A100-40GB": (312, 40), "A100-80GB": (312, 80),
    "H100-80GB": (989, 80), "H200-141GB": (989, 141),
}


class ConfigError(ValueError):
    """Everything wrong with a configuration, one line each."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    seq_length: int = Field(gt=0)
    max_position_embeddings: int | None = None
    vocab_size: int = Field(gt=0)
    make_vocab_size_divisible_by: int = 128
    init_method_std: float = 0.02
    tensor_parallel: int = Field(1, ge=1)
    pipeline_parallel: int = Field(1, ge=1)
    micro_batch_size: int = Field(gt=0)
    global_batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    min_lr: float = Field(ge=0)
    lr_decay_style: Literal["cosine", "linear", "constant"] = "cosine"
    lr_warmup_samples: int = Field(0, ge=0)
    lr_decay_samples: int | None = None
    train_samples: int = Field(gt=0)
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    recompute: Literal["none", "selective", "full"] = "selective"  # activation recomputation
    split: str = "949,50,1"
    log_interval: int = 100
    save_interval: int = 1000
    eval_interval: int = 1000
    eval_iters: int = 10
    exit_duration_in_mins: int | None = None
    gpu: str = "V100-32GB"
    mfu: float = Field(0.2, gt=0, le=1, description="model FLOPs utilisation assumed by the time estimate")
    # architecture (Megatron's flags of the same names); the defaults are Megatron's GPT, the Llama family sets all of
    # position_embedding_type rope, normalization RMSNorm, swiglu, disable_bias_linear (glotta.modeling's families)
    position_embedding_type: Literal["learned_absolute", "rope"] = "learned_absolute"
    rotary_base: int = Field(10000, gt=0)
    normalization: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    norm_epsilon: float = Field(1e-5, gt=0)
    swiglu: bool = False
    ffn_hidden_size: int | None = Field(None, gt=0)
    group_query_attention: bool = False
    num_query_groups: int | None = Field(None, gt=0)
    untie_embeddings_and_output_weights: bool = False
    disable_bias_linear: bool = False

    @property
    def head_size(self) -> float:
        return self.hidden_size / self.num_attention_heads

    def architecture_args(self) -> SimpleNamespace:
        """The Megatron-LM arguments (megatron/training/arguments.py names) that say what the model is."""
        return SimpleNamespace(
            num_layers=self.num_layers, hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
            group_query_attention=self.group_query_attention, num_query_groups=self.query_groups,
            ffn_hidden_size=self.ffn, seq_length=self.seq_length,
            max_position_embeddings=self.max_position_embeddings or self.seq_length,
            padded_vocab_size=self.padded_vocab(), norm_epsilon=self.norm_epsilon,
            position_embedding_type=self.position_embedding_type, rotary_base=self.rotary_base,
            normalization=self.normalization, swiglu=self.swiglu, add_bias_linear=not self.disable_bias_linear,
            add_qkv_bias=not self.disable_bias_linear,
            untie_embeddings_and_output_weights=self.untie_embeddings_and_output_weights)

    @property
    def family(self) -> str:
        """The registered family these Megatron options describe; ValueError for a mixture no engine serves."""
        from glotta.modeling.registry import for_megatron

        return for_megatron(self.architecture_args()).name

    def architecture(self):
        """The model's Architecture (glotta.modeling.spec): its traits, sizes and exact parameter count."""
        from glotta.modeling.registry import for_megatron

        args = self.architecture_args()
        return for_megatron(args).from_megatron(args)

    @property
    def ffn(self) -> int:
        """MLP width: Megatron's default is 4h, and for SwiGLU 2/3 of that rounded down to a multiple of 64."""
        if self.ffn_hidden_size:
            return self.ffn_hidden_size
        return int(4 * self.hidden_size * 2 / 3 / 64) * 64 if self.swiglu else 4 * self.hidden_size

    @property
    def query_groups(self) -> int:
        return self.num_query_groups if self.group_query_attention and self.num_query_groups else \
            self.num_attention_heads

    def padded_vocab(self) -> int:
        multiple = self.make_vocab_size_divisible_by * self.tensor_parallel
        return math.ceil(self.vocab_size / multiple) * multiple


PRESETS = {
    # The source talk's French/Spanish GPT (GTC 2022): 1.7 B parameters on DGX-1 nodes.
    "meme-1.7b": dict(
        name="meme-1.7b", num_layers=24, hidden_size=2304, num_attention_heads=32, seq_length=2048,
        max_position_embeddings=2048, vocab_size=50200, init_method_std=0.014, tensor_parallel=2,
        pipeline_parallel=1, micro_batch_size=8, global_batch_size=512, lr=1.2e-4, min_lr=1.2e-5,
        lr_decay_style="cosine", lr_warmup_samples=30516, lr_decay_samples=20_800_000, train_samples=20_800_000,
        weight_decay=0.1, clip_grad=1.0, adam_beta1=0.9, adam_beta2=0.95, precision="fp16",
        exit_duration_in_mins=470, gpu="V100-32GB",
        recompute="full",  # micro-batch 8 × 2048 tokens only fits a 32 GB V100 with full recomputation

    ),
    # The shipped demo models' shape (what `glotta train local` trains on CPU).
    "demo-tiny": dict(
        name="demo-tiny", num_layers=4, hidden_size=256, num_attention_heads=8, seq_length=256,
        max_position_embeddings=512, vocab_size=8192, micro_batch_size=8, global_batch_size=8, lr=2e-3,
        min_lr=1e-4, lr_warmup_samples=400, train_samples=9600, weight_decay=0.1, adam_beta2=0.95, precision="fp32",
    ),
    # The same size in the Llama architecture of today's localized models (CroissantLLM, Salamandra, EuroLLM):
    # RoPE, RMSNorm, SwiGLU, 2 key/value groups for 8 heads, untied output layer, no biases.
    "demo-tiny-llama": dict(
        name="demo-tiny-llama", num_layers=4, hidden_size=256, num_attention_heads=8, seq_length=256,
        max_position_embeddings=512, vocab_size=8192, micro_batch_size=8, global_batch_size=8, lr=2e-3,
        min_lr=1e-4, lr_warmup_samples=400, train_samples=9600, weight_decay=0.1, adam_beta2=0.95, precision="fp32",
        position_embedding_type="rope", normalization="RMSNorm", swiglu=True, group_query_attention=True,
        num_query_groups=2, untie_embeddings_and_output_weights=True, disable_bias_linear=True,
    ),
}


def load(spec: str, overrides: dict | None = None) -> TrainConfig:
    """A preset name or a YAML file, with command-line overrides applied on top."""
    if spec in PRESETS:
        data = dict(PRESETS[spec])
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"{spec}: neither a preset ({', '.join(PRESETS)}) nor a YAML file")
        data = yaml.safe_load(path.read_text()) or {}
        base = data.pop("preset", None)
        if base:
            data = {**PRESETS[base], **data}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig(**data)


def _suggest_heads(cfg: TrainConfig) -> list[str]:
    out = []
    for heads in range(1, cfg.hidden_size + 1):
        if cfg.hidden_size % heads == 0 and cfg.hidden_size // heads in SERVING_HEAD_SIZES:
            if heads % cfg.tensor_parallel == 0:
                out.append(f"{heads} heads (head size {cfg.hidden_size // heads})")
    return out


def validate(cfg: TrainConfig, nodes: int, gpus_per_node: int, allow_any_head_size: bool = False) -> int:
    """Data-parallel size, or ConfigError listing every problem."""
    errors = []
    world = nodes * gpus_per_node
    tp, pp = cfg.tensor_parallel, cfg.pipeline_parallel
    if cfg.hidden_size % cfg.num_attention_heads:
        errors.append(f"hidden size {cfg.hidden_size} is not divisible by {cfg.num_attention_heads} heads")
    if cfg.num_attention_heads % tp:
        errors.append(f"{cfg.num_attention_heads} heads are not divisible by tensor parallel {tp}")
    try:
        family = cfg.family
    except ValueError as e:
        errors.append(str(e))
        family = None
    groups = cfg.query_groups
    if cfg.group_query_attention and not cfg.num_query_groups:
        errors.append("group_query_attention needs num_query_groups")
    elif cfg.num_attention_heads % groups:
        errors.append(f"{cfg.num_attention_heads} heads are not divisible by {groups} query groups")
    elif groups % tp:
        errors.append(f"{groups} query groups are not divisible by tensor parallel {tp}")
    if family is not None and cfg.position_embedding_type == "rope" and cfg.head_size % 2:
        errors.append(f"head size {cfg.head_size:g} is odd: RoPE rotates pairs of channels")
    if cfg.num_layers % pp:
        errors.append(f"{cfg.num_layers} layers are not divisible by pipeline parallel {pp}")
    if world % (tp * pp):
        errors.append(f"world size {world} ({nodes} nodes × {gpus_per_node} GPUs) is not a multiple of "
                      f"TP×PP = {tp * pp}")
    dp = max(1, world // (tp * pp))
    if cfg.global_batch_size % (cfg.micro_batch_size * dp):
        errors.append(f"global batch {cfg.global_batch_size} is not divisible by micro batch × data parallel = "
                      f"{cfg.micro_batch_size} × {dp}")
    if (cfg.max_position_embeddings or cfg.seq_length) < cfg.seq_length:
        errors.append(f"max position embeddings {cfg.max_position_embeddings} < sequence length {cfg.seq_length}")
    if cfg.min_lr > cfg.lr:
        errors.append(f"min lr {cfg.min_lr} is above lr {cfg.lr}")
    head = cfg.head_size
    if not allow_any_head_size and head not in SERVING_HEAD_SIZES:
        hint = "; ".join(_suggest_heads(cfg)[:4]) or "change the hidden size"
        errors.append(f"head size {cfg.hidden_size}/{cfg.num_attention_heads} = {head:g} is not supported by the "
                      f"FasterTransformer / TensorRT-LLM decoder attention kernels (supported: "
                      f"{', '.join(map(str, SERVING_HEAD_SIZES))}): the model could not be served with them. "
                      f"With hidden {cfg.hidden_size} and TP {tp}, use {hint} (or --allow-any-head-size)")
    if errors:
        raise ConfigError("\n".join(errors))
    return dp
