"""A served model folder — the unit `glotta serve`, Triton and the exporters agree on:

    NAME/glotta.json        the spec (spec.py: family, architecture traits, tokenizer, weights' kind, card)
    NAME/tokenizer.json     the effective tokenizer (+ tokenizer_config.json, vocab.json, merges.txt, ...)
    NAME/1/model.onnx       the weights: the exchange graph or the fused decoder (Triton's numbered version folder)
    NAME/config.pbtxt       Triton's configuration, when the folder sits in a Triton repository
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glotta.core.errors import not_found
from glotta.core.paths import model_repository
from glotta.core.tokenizer import Tokenizer, copy_tokenizer_files

from .engine_graph import WEIGHTS
from .spec import META, ModelSpec

if TYPE_CHECKING:
    from .chat_template import ChatTemplate


@dataclass
class ModelFolder:
    path: Path
    spec: ModelSpec

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        return cls(Path(path), ModelSpec.read(path))

    @staticmethod
    def is_model(path: str | Path) -> bool:
        return (Path(path) / META).is_file()

    @classmethod
    def write(cls, path: str | Path, spec: ModelSpec, tokenizer_dir: str | Path | None = None) -> "ModelFolder":
        """glotta.json (atomically) and, from `tokenizer_dir`, the tokenizer files; the weights are the caller's."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, path)
        spec.write(path)
        return cls(path, spec)

    @property
    def name(self) -> str:
        return self.spec.name or self.path.name

    @property
    def max_context(self) -> int:
        """Prompt + generated tokens: the architecture's positions, or less where the built engine takes less."""
        return min(self.spec.architecture.n_positions, self.spec.limits.get("max_seq_len", 1 << 62))

    @property
    def max_prompt(self) -> int | None:
        """Prompt tokens the built engine takes (a TensorRT-LLM engine's max_input_len), where it says."""
        return self.spec.limits.get("max_input_len")

    @property
    def onnx_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.spec.tokenizer.file

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.tokenizer_path, self.spec.tokenizer.eos_tokens)

    def special_token_texts(self) -> dict[str, str]:
        """bos/eos/unk/pad as a chat template sees them: the folder's tokenizer_config.json (transformers' order,
        special_tokens.py) when it has one, else the spec's."""
        from .special_tokens import folder_token_names

        t = self.spec.tokenizer
        names = folder_token_names(self.path) or {"bos_token": t.bos_token, "pad_token": t.pad_token,
                                                 "eos_token": t.eos_tokens[0] if t.eos_tokens else None}
        return {k: v for k, v in names.items() if v is not None}

    def chat_template(self) -> "ChatTemplate | None":
        from .chat_template import ChatTemplate

        return ChatTemplate.from_folder(self.path, self.special_token_texts())


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
