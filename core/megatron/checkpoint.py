"""Megatron-LM's legacy checkpoint layout, and its tracker file — the only code that reads or writes the tracker:

    SAVE/latest_checkpointed_iteration.txt                 "100" (or "release")
    SAVE/iter_0000100/mp_rank_00/model_optim_rng.pt         {"args", "checkpoint_version": 3.0, "iteration",
                                                             "model": {"language_model": {"embedding", "encoder"}},
                                                             "optimizer", "opt_param_scheduler", "rng_state"}

Writing takes the `model` entry ready-made, in the family's layout (each family's `megatron_state`: the legacy
layout for a GPT-2, Megatron-core's for a Llama or Qwen2). Reading any Megatron layout is glotta.modeling's
megatron_reader.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import atomic_write

CHECKPOINT_VERSION = 3.0
TRACKER = "latest_checkpointed_iteration.txt"


class CheckpointError(ValueError):
    pass


def is_checkpoint(save_dir: str | Path) -> bool:
    return (Path(save_dir) / TRACKER).is_file()


def iteration_dir(save_dir: str | Path) -> Path:
    """The folder of the iteration the tracker names (a folder of mp_rank_* is taken as it is)."""
    save_dir = Path(save_dir)
    tracker = save_dir / TRACKER
    if tracker.is_file():
        it = tracker.read_text().strip()
        return save_dir / ("release" if it == "release" else f"iter_{int(it):07d}")
    if any(save_dir.glob("mp_rank_*")):
        return save_dir
    raise CheckpointError(f"{save_dir}: no {TRACKER} and no mp_rank_* folders (not a Megatron checkpoint)")


def latest(save_dir: str | Path) -> Path | None:
    """The single-rank file of the latest iteration, or None when nothing was saved yet."""
    if not is_checkpoint(save_dir):
        return None
    return iteration_dir(save_dir) / "mp_rank_00" / "model_optim_rng.pt"


def save(save_dir: str | Path, iteration: int, model: dict, args: argparse.Namespace, optimizer: dict, scheduler: dict,
         rng_state: dict) -> Path:
    """Write iteration `iteration` and then point the tracker at it (both atomically). `model` is the checkpoint's
    `model` entry, in the family's Megatron layout (glotta.modeling.megatron_hf.save_checkpoint makes it)."""
    import torch

    save_dir = Path(save_dir)
    path = save_dir / f"iter_{iteration:07d}" / "mp_rank_00" / "model_optim_rng.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"args": args, "checkpoint_version": CHECKPOINT_VERSION, "iteration": iteration,
             "model": model, "optimizer": optimizer, "opt_param_scheduler": scheduler,
             "rng_state": [rng_state]}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, str(tmp))
    tmp.replace(path)
    atomic_write(save_dir / TRACKER, str(iteration))
    return path


def load(path: str | Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)  # a Megatron file: it holds an argparse Namespace
