"""The model's tokenizer (Hugging Face `tokenizers`) and its end tokens, decided here only.

Prompts are encoded as the tokenizer itself encodes them, with the special tokens its own post-processor adds (a
Llama's `<s>`; nothing for GPT-2's): `encode_prompt`. Pieces of text that are not prompts (a continuation to score,
training documents) are encoded without them: `encode`. Generation stops at any of the model's end tokens
(`stop_ids`); the first is Megatron's EOD (`<|endoftext|>` for GPT-2 and Glotta-trained tokenizers: it ends
documents in training data, is `add_BOS`'s token and FasterTransformer's / TensorRT-LLM's `end_id`). Its id depends on
the vocabulary, so it is always read from the tokenizer. A model may have no end token at all (`eod_id` None).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from .errors import invalid

EOD_TOKEN = "<|endoftext|>"
# Hugging Face tokenizers' file, and Megatron's GPT2BPETokenizer files (vocab + merges)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


class Tokenizer:
    def __init__(self, path: str | Path, eos_tokens: tuple[str, ...] | None = (EOD_TOKEN,)) -> None:
        """`eos_tokens`: the model's end tokens (the first is its end of document), by their text."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise invalid(f"{path}: no tokenizer.json (pass the folder that holds the model's tokenizer)", "tokenizer")
        self.path = path
        self._tok = HFTokenizer.from_file(str(path))
        ids = []
        for token in eos_tokens or ():
            i = self._tok.token_to_id(token)
            if i is None:
                raise invalid(f"{path}: tokenizer has no {token} token", "tokenizer")
            ids.append(i)
        self.eod_id: int | None = ids[0] if ids else None
        self.stop_ids: frozenset[int] = frozenset(ids)
        self.vocab_size: int = self._tok.get_vocab_size()
        self._piece_cache: dict[int, str] = {}
        # Megatron hard-codes GPT-2's ids (":" then 198/628 for newlines); ours depend on the vocabulary. A colon token
        # is any that ends in ":" — French typography writes " :", its own token, which Megatron's rule misses.
        pieces = [self.piece(i) for i in range(self.vocab_size)]
        self.colon_ids = frozenset(i for i, p in enumerate(pieces) if p.endswith(":"))
        self.newline_ids = [i for i, p in enumerate(pieces) if "\n" in p]

    def encode(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text`; `special`: with the special tokens the tokenizer's post-processor adds to a prompt."""
        if len(text) > 256:  # `encode_batch` releases the GIL (`encode` holds it): other threads run meanwhile
            return self._tok.encode_batch([text], add_special_tokens=special)[0].ids
        return self._tok.encode(text, add_special_tokens=special).ids

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids exactly as the model's own tokenizer gives them (its BOS, if it adds one)."""
        return self.encode(text, special=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special)

    @functools.cached_property
    def token_bytes(self) -> list[bytes] | None:
        """The bytes each token stands for, for byte-level BPE (GPT-2's decoder); None for other decoders.

        Streaming decodes with this table and an incremental UTF-8 decoder: O(1) per token, where asking the
        tokenizer to decode a window costs two Rust calls per token and row.
        """
        if type(self._tok.decoder).__name__ != "ByteLevel":
            return None
        to_byte = {c: b for b, c in _bytes_to_unicode().items()}
        table = [b""] * self.vocab_size
        for token, i in self._tok.get_vocab(with_added_tokens=False).items():
            if i < self.vocab_size:
                table[i] = bytes(to_byte[c] for c in token if c in to_byte)
        for i, added in self._tok.get_added_tokens_decoder().items():
            if i < self.vocab_size:
                table[i] = added.content.encode()
        return table

    @functools.cached_property
    def max_token_chars(self) -> int:
        """An upper bound on the characters of text one token can stand for: a text of n characters holds at least
        n / max_token_chars tokens, which refuses an over-long prompt without tokenizing it. A normalizer may fold
        several characters into one (NFKC, NFC), so it counts four times as many."""
        if self.token_bytes is not None:  # a character is at least one byte
            longest = max(len(b) for b in self.token_bytes)
        else:
            longest = max(len(self.piece(i).encode()) for i in range(self.vocab_size)) + 1
        added = [len(t.content) for t in self._tok.get_added_tokens_decoder().values()]
        return max(longest, *added) * (4 if self._tok.normalizer is not None else 1)

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        return frozenset(i for i, t in self._tok.get_added_tokens_decoder().items() if t.special)

    def piece(self, token_id: int) -> str:
        """Text of one token on its own (may be U+FFFD when a character spans tokens)."""
        p = self._piece_cache.get(token_id)
        if p is None:
            p = self._piece_cache[token_id] = self._tok.decode([token_id], skip_special_tokens=False)
        return p

    def alternative_key(self, token_id: int) -> str:
        """A token as an alternative in a top-log-probs map: its text, or — for part of a character, whose text would
        be U+FFFD for several tokens at once — OpenAI's `bytes:\\xe2\\x80` spelling of its bytes."""
        p = self.piece(token_id)
        if "\ufffd" in p and self.token_bytes is not None:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in self.token_bytes[token_id])
        return p


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte ↔ printable character table (byte-level BPE stores bytes as these characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def copy_tokenizer_files(src: str | Path, dst: str | Path, names: tuple[str, ...] = TOKENIZER_FILES) -> list[str]:
    """Copy the tokenizer files `src` holds (of `names`) beside an exported model; returns the names copied."""
    copied = []
    Path(dst).mkdir(parents=True, exist_ok=True)
    for name in names:
        if (Path(src) / name).is_file():
            shutil.copy(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied
