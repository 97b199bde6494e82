"""Where Glotta keeps things: the model repository and the cache (each overridable by one environment variable)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable


def cache_dir() -> Path:
    """`$GLOTTA_CACHE`, else `~/.cache/glotta`: derived engines, compiled gRPC stubs, converted models."""
    return Path(os.environ.get("GLOTTA_CACHE", Path.home() / ".cache" / "glotta"))


def model_repository() -> Path:
    """`$GLOTTA_MODEL_REPOSITORY`, else the package's own copy: the demo models and Triton configs travel in the wheel
    as `glotta/model_repository` (in a checkout, the top-level folder), so `glotta serve` works from any directory."""
    env = os.environ.get("GLOTTA_MODEL_REPOSITORY")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "model_repository"


def content_digest(paths: Iterable[Path], progress=None) -> str:
    """16 hex digits of the SHA-256 of the files' contents, in order: the cache key of whatever is derived from them.
    `progress`: a rich Progress to show the hashing of large files on."""
    paths = [Path(p) for p in paths]
    task = progress.add_task("hashing", total=sum(p.stat().st_size for p in paths)) if progress else None
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
                if progress:
                    progress.advance(task, len(block))
    return h.hexdigest()[:16]
