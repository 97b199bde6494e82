"""`glotta train local`: a single-machine PyTorch trainer for small GPTs, on a Megatron `.bin/.idx` dataset, writing
Megatron-LM checkpoints. CPU, or one GPU when present.

Data follow megatron-core's GPTDataset sample for sample (megatron_sampling.py): documents (already ending in EOD when
converted with --append-eod) split into train/valid by the `split` ratios, every epoch's documents shuffled with the
seed, concatenated and cut into samples of seq + 1 tokens, the samples shuffled. Optimisation follows the seed's arguments: AdamW (β1, β2, weight decay on matrices only), linear warm-up then
cosine decay to min_lr, gradient clipping. A resumed run loads weights, optimizer, scheduler, sample position and RNG
state, so it continues with exactly the losses of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from glotta.core.megatron import checkpoint as ckpt
from glotta.core.megatron.indexed import MegatronDataset
from glotta.modeling.megatron_hf import load_into, save_checkpoint
from glotta.modeling.perplexity import mean_loss, samples_of

from .megatron_config import TrainConfig
from .megatron_sampling import GPTSamples, split_ranges


def lr_at(cfg: TrainConfig, samples: int) -> float:
    """Megatron's schedule, in samples: linear warm-up, then cosine (or linear) decay to min_lr."""
    warm, decay = cfg.lr_warmup_samples, cfg.lr_decay_samples or cfg.train_samples
    if warm and samples < warm:
        return cfg.lr * samples / warm
    progress = min(1.0, (samples - warm) / max(1, decay - warm))
    if cfg.lr_decay_style == "constant":
        return cfg.lr
    coeff = 0.5 * (math.cos(math.pi * progress) + 1) if cfg.lr_decay_style == "cosine" else 1 - progress
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


def build_model(cfg: TrainConfig, seed: int):
    """The configuration's model in `transformers` (its family's: GPT2LMHeadModel, LlamaForCausalLM, ...), its config
    made by the same Megatron → Hugging Face mapping the exporters use, from the arguments its checkpoints record."""
    from transformers import AutoModelForCausalLM

    from glotta.modeling.megatron_hf import hf_config
    from glotta.modeling.megatron_reader import architecture_of

    config = hf_config(*architecture_of(megatron_args(cfg, 0)))
    config.initializer_range = cfg.init_method_std
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def _loss(model, batch: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def train(cfg: TrainConfig, data_prefix: str, save: str, seed: int = 1234, max_steps: int | None = None,
          progress: bool | None = None, valid_prefix: str | None = None) -> list[float]:
    """Train (or resume from `save`); returns the loss of every step run in this call. With `valid_prefix` (Megatron's
    --valid-data-path) every document of `data_prefix` trains and validation reads that dataset instead of a split."""
    from glotta.core.progress import bar as progress_bar

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ds = MegatronDataset(data_prefix)
    if valid_prefix:
        valid_ds = MegatronDataset(valid_prefix)
        train_docs, valid_docs = np.arange(len(ds)), np.arange(len(valid_ds))
    else:
        valid_ds = ds
        train_range, valid_range, _ = split_ranges(len(ds), cfg.split)
        if train_range is None:
            raise ValueError(f"split {cfg.split!r} leaves no training documents")
        train_docs = np.arange(*train_range)
        valid_docs = np.arange(*valid_range) if valid_range else np.zeros(0, np.int64)
    samples = GPTSamples(ds, train_docs, cfg.seq_length, seed, cfg.train_samples)
    model = build_model(cfg, seed).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    step, history = 0, {"loss": [], "valid": []}
    resume = ckpt.latest(save)
    if resume is not None:
        state = ckpt.load(resume)
        load_into(model, state)
        opt.load_state_dict(state["optimizer"])
        step = state["iteration"]
        history = state["opt_param_scheduler"]["history"]
        torch.set_rng_state(state["rng_state"][0]["torch"])
    steps = cfg.train_samples // cfg.global_batch_size
    if max_steps is not None:
        steps = min(steps, max_steps)
    accumulation = cfg.global_batch_size // cfg.micro_batch_size
    losses = []
    bar = progress_bar(progress, total=steps, initial=step, desc=f"train {cfg.name}")
    model.train()
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step * cfg.global_batch_size)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(accumulation):  # samples in megatron-core's order: step × global batch onwards
            first = step * cfg.global_batch_size + micro * cfg.micro_batch_size
            batch = torch.from_numpy(np.stack([samples[first + k] for k in range(cfg.micro_batch_size)])).to(device)
            loss = _loss(model, batch) / accumulation
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        step += 1
        losses.append(total)
        history["loss"].append(total)
        bar.set_postfix(loss=f"{total:.3f}")
        bar.update()
        if step % cfg.eval_interval == 0 or step == steps:
            history["valid"].append([step, evaluate(model, valid_ds, valid_docs, cfg, device)])
        if step % cfg.save_interval == 0 or step == steps:
            _save(save, step, model, cfg, opt, history)
    bar.close()
    if losses:  # a rerun with nothing left to train leaves the folder as it was
        plot(history, Path(save) / "loss.png", cfg.name)
    return losses


def megatron_args(cfg: TrainConfig, step: int) -> argparse.Namespace:
    """The Megatron-LM arguments (megatron/training/arguments.py names and meanings) that Megatron's own tools and
    FasterTransformer's megatron_ckpt_convert.py read from a checkpoint: Megatron's GPT default (learned absolute
    positions, pre-LayerNorm, biases, exact GELU, tied embeddings) or RoPE, RMSNorm, SwiGLU, grouped KV heads without
    biases as configured; fp32 parameters."""
    from glotta.modeling.registry import get

    h, heads = cfg.hidden_size, cfg.num_attention_heads
    legacy = get(cfg.family).megatron_legacy  # the layout its checkpoints are written in
    # the order of the arguments is the order of args.txt (FasterTransformer's converter writes them so)
    return argparse.Namespace(
        num_layers=cfg.num_layers, hidden_size=h, ffn_hidden_size=cfg.ffn, num_attention_heads=heads,
        kv_channels=h // heads, num_query_groups=cfg.query_groups, group_query_attention=cfg.group_query_attention,
        seq_length=cfg.seq_length, max_position_embeddings=cfg.max_position_embeddings or cfg.seq_length,
        position_embedding_type=cfg.position_embedding_type, rotary_base=cfg.rotary_base, rotary_percent=1.0,
        rotary_interleaved=False, use_rope_scaling=False, normalization=cfg.normalization,
        norm_epsilon=cfg.norm_epsilon, layernorm_epsilon=cfg.norm_epsilon,
        apply_layernorm_1p=False, apply_residual_connection_post_layernorm=False,
        add_bias_linear=not cfg.disable_bias_linear, add_qkv_bias=not cfg.disable_bias_linear,
        swiglu=cfg.swiglu, openai_gelu=False, squared_relu=False, bias_gelu_fusion=False, bias_swiglu_fusion=cfg.swiglu,
        untie_embeddings_and_output_weights=cfg.untie_embeddings_and_output_weights,
        apply_query_key_layer_scaling=False,
        attention_softmax_in_fp32=True, padded_vocab_size=cfg.padded_vocab(),
        make_vocab_size_divisible_by=cfg.make_vocab_size_divisible_by, tokenizer_type="GPT2BPETokenizer",
        params_dtype=torch.float32, fp16=False, bf16=False, tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1, virtual_pipeline_model_parallel_size=None,
        micro_batch_size=cfg.micro_batch_size, global_batch_size=cfg.global_batch_size, lr=cfg.lr,
        min_lr=cfg.min_lr, consumed_train_samples=step * cfg.global_batch_size, consumed_valid_samples=0,
        iteration=step, use_legacy_models=legacy, ckpt_format="torch", glotta_config=cfg.model_dump(),
    )


def _save(save: str, step: int, model, cfg: TrainConfig, opt, history: dict) -> None:
    args = megatron_args(cfg, step)
    # the data position is the consumed samples (args), as in Megatron: nothing else to restore
    scheduler = {"num_steps": step * cfg.global_batch_size, "history": history}
    save_checkpoint(save, step, model, args, opt.state_dict(), scheduler, {"torch": torch.get_rng_state()})


def evaluate(model, ds: MegatronDataset, docs: np.ndarray, cfg: TrainConfig, device: str) -> float:
    """Mean validation loss over every full sample of the validation documents (nan without one)."""
    samples = samples_of(ds, docs, cfg.seq_length)
    return mean_loss(model, samples, 8, device) if len(samples) else float("nan")


def plot(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(history["loss"]) + 1), history["loss"], label="train", linewidth=1)
    if history["valid"]:
        ax.plot(*zip(*history["valid"]), marker="o", label="valid")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    (path.with_suffix(".json")).write_text(json.dumps(history))
