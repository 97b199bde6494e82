"""A served model folder — the unit `glotta serve`, Triton and the exporters agree on:

    NAME/glotta.json        model card data: name, architecture, vocab_size, n_positions, n_layer, n_embd, n_head, …
    NAME/tokenizer.json     (+ vocab.json, merges.txt: Megatron's files)
    NAME/1/model.onnx       the engine (Triton's numbered version folder)
    NAME/config.pbtxt       Triton's configuration, when the folder sits in a Triton repository

Only this module reads or writes glotta.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write
from .errors import not_found
from .paths import model_repository
from .tokenizer import Tokenizer, copy_tokenizer_files

META = "glotta.json"


@dataclass
class ModelFolder:
    path: Path
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        path = Path(path)
        return cls(path, json.loads((path / META).read_text()))

    @staticmethod
    def is_model(path: str | Path) -> bool:
        return (Path(path) / META).is_file()

    @classmethod
    def write(cls, path: str | Path, meta: dict, tokenizer_dir: str | Path | None = None) -> "ModelFolder":
        """glotta.json (atomically) and, from `tokenizer_dir`, the tokenizer files; the engine is the caller's."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, path)
        meta = {"name": path.name, **meta}
        atomic_write(path / META, json.dumps(meta, indent=2) + "\n")
        return cls(path, meta)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @property
    def max_context(self) -> int:
        return int(self.meta["n_positions"])

    @property
    def onnx_path(self) -> Path:
        return self.path / "1" / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.meta.get("tokenizer", "tokenizer.json")

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.tokenizer_path, self.meta.get("eod_token"), self.meta.get("bos_token"))


def resolve_model(spec: str, repository: Path | None = None) -> Path:
    """A model folder from a path or a name in the repository, with an error that lists what exists."""
    if ModelFolder.is_model(spec):
        return Path(spec)
    repo = repository or model_repository()
    if ModelFolder.is_model(repo / spec):
        return repo / spec
    available = sorted(p.name for p in repo.glob("*") if ModelFolder.is_model(p)) if repo.is_dir() else []
    raise not_found(f"model {spec!r} not found: not a model folder, and not in {repo} (available: {available})",
                    "model")
