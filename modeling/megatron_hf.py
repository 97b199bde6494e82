"""Canonical Megatron weights (megatron_reader.py) ↔ a `transformers` model of the checkpoint's family.

The one Megatron ↔ Hugging Face mapping, used by every exporter, by the local trainer when it resumes, and by the
checkpoint writer; the names themselves are each family's (families/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .megatron_reader import MegatronCheckpoint, architecture_of, canonical_rank
from .registry import get
from .spec import Architecture


def hf_state_dict(merged: dict, family: str, arch: Architecture) -> dict:
    """Canonical weights → the `transformers` state dict of the family (fp32)."""
    sd = get(family).hf_state_from_megatron(merged, arch)
    return {k: v.float().contiguous() for k, v in sd.items()}


def hf_config(family: str, arch: Architecture, eos: int | None = None, bos: int | None = None):
    """The `transformers` config of an architecture (what `AutoModelForCausalLM.from_config` builds)."""
    from transformers import AutoConfig

    data = {k: v for k, v in get(family).to_hf_config(arch, eos, bos).items()
            if not (k in ("bos_token_id", "eos_token_id") and v is None)}  # unknown: transformers' defaults
    data.pop("architectures", None)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def to_hf(ckpt: MegatronCheckpoint, tokenizer: str | Path | None = None):
    """A `transformers` model holding the checkpoint's weights. With the model's tokenizer, its end-of-document token
    becomes the config's eos (and bos) id — what `generate` and TRT-LLM stop on."""
    from transformers import AutoModelForCausalLM

    merged = ckpt.merged
    tied = "lm_head" not in merged or torch.equal(merged["lm_head"], merged["wte"])
    eos = None
    if tokenizer is not None:
        from glotta.core.tokenizer import Tokenizer

        eos = Tokenizer(tokenizer).eod_id
    arch = ckpt.architecture
    from dataclasses import replace

    model = AutoModelForCausalLM.from_config(hf_config(ckpt.family, replace(arch, tied_embeddings=tied), eos, eos))
    model.load_state_dict(hf_state_dict(merged, ckpt.family, arch))
    return model.eval()


def megatron_state(model) -> dict:
    """A `transformers` model → the `model` entry of a Megatron checkpoint of its family (the checkpoint writer's)."""
    from .registry import for_hf_config

    return for_hf_config(model.config.to_dict()).megatron_state(model)


def load_into(model, state: dict[str, Any]) -> None:
    """Load a single-rank checkpoint's weights into a model of the same shape (in place), through the one Megatron →
    Hugging Face mapping."""
    from glotta.core.megatron.checkpoint import CHECKPOINT_VERSION

    family, arch = architecture_of(state["args"], model.config.vocab_size)
    merged = canonical_rank({"checkpoint_version": CHECKPOINT_VERSION, "model": state["model"]}, arch.n_head, 0)
    model.load_state_dict(hf_state_dict(merged, family, arch))


def save_checkpoint(save_dir: str | Path, iteration: int, model, args, optimizer: dict, scheduler: dict,
                    rng_state: dict) -> Path:
    """A `transformers` model as a Megatron checkpoint of its family (the tracker written last, atomically)."""
    from glotta.core.megatron.checkpoint import save

    return save(save_dir, iteration, megatron_state(model), args, optimizer, scheduler, rng_state)
