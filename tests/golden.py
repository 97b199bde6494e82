"""A Megatron checkpoint that any machine rebuilds bit for bit — written by the local trainer's checkpoint writer with
the arguments it records — for goldens produced once by upstream tools (tests/fixtures/).

Weights are exact multiples of 1/4096 below 1/8 (no random numbers, no transcendental functions), so fp32 and fp16
files of them are the same everywhere."""

from __future__ import annotations

from pathlib import Path

import torch

from glotta.modeling.megatron_hf import save_checkpoint
from glotta.training.local_trainer import build_model, megatron_args
from glotta.training.megatron_config import TrainConfig

REPO = Path(__file__).resolve().parents[1] / "model_repository"
TOKENIZER = REPO / "glotta-fr-tiny"  # vocab.json names <|endoftext|>: FT's converter reads start/end ids from it
CFG = TrainConfig(name="ft-golden", num_layers=2, hidden_size=64, num_attention_heads=2, seq_length=32,
                  max_position_embeddings=64, vocab_size=8192, make_vocab_size_divisible_by=128, micro_batch_size=1,
                  global_batch_size=1, lr=1e-3, min_lr=1e-4, train_samples=1)


def golden_checkpoint(save: Path) -> Path:
    model = build_model(CFG, 0)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            k = torch.arange(p.numel(), dtype=torch.int64)
            p.copy_((((k * 37 + i * 101) % 997 - 498).to(torch.float32) / 4096).reshape(p.shape))
    save_checkpoint(save, 1, model, megatron_args(CFG, 1), {}, {}, {})
    return save
