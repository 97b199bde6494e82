"""Which tokenizer an export ships and takes its special tokens from — never guessed: the one given, else the
vocab/merge files the checkpoint's Megatron arguments name (when they exist here), else a tokenizer.json saved
beside the checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from glotta.core.errors import invalid
from glotta.core.megatron.checkpoint import is_checkpoint
from glotta.core.paths import cache_dir, content_digest

log = logging.getLogger("glotta.export")


def tokenizer_dir(source: str | Path, given: str | Path | None = None, required: bool = True) -> Path | None:
    """The folder holding the model's tokenizer.json; without one, an error saying what to pass (None if not
    `required`)."""
    if given:
        return Path(given)
    named = tokenizer_from_args(Path(source))
    if named is not None:
        return named
    if (Path(source) / "tokenizer.json").is_file():
        return Path(source)
    if not required:
        return None
    raise invalid(f"no tokenizer for {source}: pass --tokenizer DIR (the folder holding the model's tokenizer.json, "
                  "as written by `glotta tokenizer train`); the checkpoint's args name no vocab/merge files found here",
                  "tokenizer")


def tokenizer_from_args(source: Path) -> Path | None:
    """A tokenizer.json built from the GPT-2 vocab.json + merges.txt the checkpoint was trained with."""
    from glotta.modeling.megatron_reader import checkpoint_args

    if not is_checkpoint(source):
        return None
    args = checkpoint_args(source)
    vocab, merges = getattr(args, "vocab_file", None), getattr(args, "merge_file", None)
    if not (vocab and merges and Path(vocab).is_file() and Path(merges).is_file()):
        return None
    from tokenizers import ByteLevelBPETokenizer

    out = cache_dir() / "tokenizers" / content_digest([vocab, merges])
    if not (out / "tokenizer.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        ByteLevelBPETokenizer(vocab, merges).save(str(out / "tokenizer.json.tmp"))
        shutil.copy(vocab, out / "vocab.json")
        shutil.copy(merges, out / "merges.txt")
        (out / "tokenizer.json.tmp").replace(out / "tokenizer.json")
    log.info("tokenizer: the checkpoint's --vocab-file %s and --merge-file %s", vocab, merges)
    return out


def read_checkpoint(source: str | Path, tokenizer: Path | None):
    """The checkpoint, its vocabulary padding trimmed to the tokenizer's size when there is one."""
    from glotta.core.tokenizer import Tokenizer
    from glotta.modeling.megatron_reader import read

    return read(source, Tokenizer(tokenizer, None).vocab_size if tokenizer else None)
