"""`glotta tokenizer train`: a GPT-2 byte-level BPE trained on your language, and the fertility report that says
whether adapting the vocabulary was worth it (fewer tokens per word = longer effective context, cheaper training).

Huge corpora train in bounded memory and time: documents are sampled in one streaming pass, by a hash of their text
(deterministic, so reruns pick the same ones), up to a character budget; a hash slice is held out for the report.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

from glotta.core.progress import interactive
from glotta.core.tokenizer import EOD_TOKEN

from .convert import input_files

_WORD = re.compile(r"\w+", re.UNICODE)
def _unit(text: str, salt: bytes) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, key=salt).digest(), "little") / 2**64


def iter_texts(files: list[str], key: str = "text") -> Iterator[str]:
    """Texts of JSONL files (plain or .gz); lines that are not usable are skipped (`glotta data convert` reports them)."""
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    value = json.loads(line).get(key)
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(value, str) and value:
                    yield value


def sample(files: list[str], key: str, max_chars: int, heldout_fraction: float) -> tuple[list[str], list[str]]:
    """(training sample, held-out documents): one pass, the sampling rate set from the input's size."""
    total = sum(os.path.getsize(f) * (4 if f.endswith(".gz") else 1) for f in files)  # .gz: ~4× when unpacked
    rate = min(1.0, max_chars / max(total, 1))
    train, heldout, chars = [], [], 0
    for text in iter_texts(files, key):
        if _unit(text, b"heldout") < heldout_fraction:
            if len(heldout) < 2000:
                heldout.append(text)
        elif _unit(text, b"train") < rate and chars < max_chars:
            train.append(text)
            chars += len(text)
    return train, heldout


def train_bpe(texts: list[str], vocab_size: int, out: Path, show_progress: bool | None = None):
    """Byte-level BPE with `<|endoftext|>`: writes tokenizer.json and Megatron's vocab.json + merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=interactive() if show_progress is None else show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    tok.model.save(str(out))  # vocab.json + merges.txt: what GPT2BPETokenizer and GPT2TokenizerFast read
    return tok


def load_any(path: str | Path):
    """A tokenizer from tokenizer.json, or a folder holding it or GPT-2's vocab.json + merges.txt."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import ByteLevelBPETokenizer

    path = Path(path)
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return ByteLevelBPETokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    raise FileNotFoundError(f"{path}: no tokenizer.json, nor vocab.json + merges.txt")


def fertility(tok, texts: list[str]) -> dict[str, float]:
    tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
    words = sum(len(_WORD.findall(t)) for t in texts)
    chars = sum(len(t) for t in texts)
    return {"tokens": tokens, "tokens_per_word": tokens / max(words, 1), "tokens_per_char": tokens / max(chars, 1),
            "chars_per_token": chars / max(tokens, 1)}


def train(inputs: list[str], vocab_size: int, output: Path, key: str = "text", max_chars: int = 200_000_000,
          heldout_fraction: float = 0.01, baseline: str | None = None) -> dict:
    files = input_files(inputs)
    texts, heldout = sample(files, key, max_chars, heldout_fraction)
    if not texts:
        raise ValueError(f"no `{key}` text found in {files}")
    tok = train_bpe(texts, vocab_size, output)
    report = {"documents": len(texts), "characters": sum(map(len, texts)), "vocab_size": tok.get_vocab_size(),
              "heldout_documents": len(heldout), "trained": fertility(tok, heldout or texts[:200])}
    if baseline:
        report["baseline"] = {"path": str(baseline), **fertility(load_any(baseline), heldout or texts[:200])}
    (output / "fertility.json").write_text(json.dumps(report, indent=2))
    return report
