"""TensorRT-LLM engines built with tensor (or pipeline) parallelism run one MPI rank per GPU. As tensorrtllm_backend's
scripts/launch_triton_server.py (v0.14.0) does, tritonserver then starts under `mpirun` once per rank: rank 0 loads
every model and serves; the other ranks load only the TensorRT-LLM engine models, each with its own shared-memory
prefix for the Python backend."""

from __future__ import annotations

import json
import re
from pathlib import Path


class EngineMissing(ValueError):
    """A TensorRT-LLM engine model whose gpt_model_path holds no built engine."""


def engine_dir(repository: Path, model: str, config: str) -> Path:
    """The engine folder a TensorRT-LLM model's config names: `gpt_model_path`, relative to the repository (as
    tritonserver, started there, resolves it) or absolute."""
    m = re.search(r'key:\s*"gpt_model_path"\s*value:\s*\{\s*string_value:\s*"([^"]+)"', config)
    return repository / (m.group(1) if m else f"{model}/1")


def engine_world_size(repository: Path, models: list[str]) -> tuple[int, list[str]]:
    """(MPI ranks needed, the TensorRT-LLM engine models among `models`): the largest world size (TP × PP) their
    built engines' config.json declare; 1 when there is none. A model whose engine is missing is an error that says
    where it was looked for, not a silent single rank."""
    world, engines = 1, []
    for model in models:
        cfg = repository / model / "config.pbtxt"
        text = cfg.read_text() if cfg.is_file() else ""
        if not re.search(r'backend:\s*"tensorrtllm"', text):
            continue
        engines.append(model)
        built = engine_dir(repository, model, text) / "config.json"
        if not built.is_file():
            raise EngineMissing(f"{model}: no TensorRT-LLM engine at {built.parent} (its config.pbtxt's "
                                f"gpt_model_path, from {repository}): build one with `glotta export trtllm ... "
                                f"--engine-dir {repository / model / '1'} --run`")
        mapping = json.loads(built.read_text()).get("pretrained_config", {}).get("mapping", {})
        world = max(world, int(mapping.get("world_size")
                               or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1))))
    return world, engines


def mpirun_command(world: int, rank0: list[str], engines: list[str], shm_prefix: str = "") -> list[str]:
    """`mpirun -n 1 tritonserver ... : -n 1 tritonserver ... ` with one tritonserver per rank."""
    cmd = ["mpirun", "--allow-run-as-root"]
    for rank in range(world):
        args = list(rank0)
        if rank:
            args = [a for a in args if not a.startswith("--load-model=")] + [f"--load-model={m}" for m in engines]
        cmd += ["-n", "1", *args, "--disable-auto-complete-config",
                f"--backend-config=python,shm-region-prefix-name={shm_prefix or 'prefix'}{rank}_", ":"]
    return cmd[:-1]
