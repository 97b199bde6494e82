"""Where Glotta keeps things: the model repository and the cache (each overridable by one environment variable)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$GLOTTA_CACHE`, else `~/.cache/glotta`: derived engines, compiled gRPC stubs, converted models."""
    return Path(os.environ.get("GLOTTA_CACHE", Path.home() / ".cache" / "glotta"))


def model_repository() -> Path:
    """`$GLOTTA_MODEL_REPOSITORY`, else `./model_repository`, else the one beside the installed sources."""
    env = os.environ.get("GLOTTA_MODEL_REPOSITORY")
    if env:
        return Path(env)
    here = Path.cwd() / "model_repository"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "model_repository"
