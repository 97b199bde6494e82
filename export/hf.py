"""Megatron checkpoint → Hugging Face folder (safetensors, config.json, the tokenizer) of the checkpoint's family."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glotta.core.tokenizer import copy_tokenizer_files

from .tokenizer_source import read_checkpoint, tokenizer_dir


@dataclass
class HFExport:
    path: Path
    family: str
    summary: dict
    tokenizer: Path | None  # None: the folder has no tokenizer and no eos id, so it cannot be served as it is


def export_hf(source: str | Path, output: str | Path, tokenizer: str | Path | None = None) -> HFExport:
    """Write the folder; with a tokenizer (given, named by the checkpoint's args, or beside it) its end-of-document
    token becomes the config's eos id and its files are copied in."""
    from glotta.modeling.megatron_hf import to_hf

    tok = tokenizer_dir(source, tokenizer, required=False)
    ckpt = read_checkpoint(source, tok)
    out = Path(output)
    to_hf(ckpt, tok).save_pretrained(out, safe_serialization=True)
    if tok is not None:
        copy_tokenizer_files(tok, out)
    return HFExport(out, ckpt.family, ckpt.summary(), tok)
