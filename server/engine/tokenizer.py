"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) and the incremental detokenizer a streaming engine needs."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from .protocol import EngineError, GenerationRequest

EOD_TOKEN = "<|endoftext|>"


class Tokenizer:
    def __init__(self, path: str | Path) -> None:
        self._tok = HFTokenizer.from_file(str(path))
        eod = self._tok.token_to_id(EOD_TOKEN)
        if eod is None:
            raise ValueError(f"{path}: tokenizer has no {EOD_TOKEN} token")
        self.eod_id: int = eod
        self.vocab_size: int = self._tok.get_vocab_size()
        self._piece_cache: dict[int, str] = {}
        # Token ids whose text holds a newline: Megatron hard-codes GPT-2's 198/628; ours depend on the vocabulary.
        self.colon_id = self._single_id(":")
        self.newline_ids = [i for i in range(self.vocab_size) if "\n" in self.piece(i)]

    def _single_id(self, text: str) -> int | None:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ids[0] if len(ids) == 1 else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special)

    def piece(self, token_id: int) -> str:
        """Text of one token on its own (may be U+FFFD when a character spans tokens)."""
        p = self._piece_cache.get(token_id)
        if p is None:
            p = self._piece_cache[token_id] = self._tok.decode([token_id], skip_special_tokens=False)
        return p


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas without splitting multi-byte characters.

    Decoding one token at a time would emit U+FFFD for an accented letter whose bytes fall in two tokens; instead we
    decode a short window and only release text once it no longer ends in an incomplete character.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True) -> None:
        self.tok = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self._prefix = 0  # start of the window whose text was already released
        self._read = 0  # end of released tokens

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self.tok.decode(self.ids[self._prefix : self._read], self.skip_special)
        full_text = self.tok.decode(self.ids[self._prefix :], self.skip_special)
        if full_text.endswith("\ufffd") or len(full_text) < len(prefix_text):
            return ""
        delta = full_text[len(prefix_text) :]
        self._prefix = self._read
        self._read = len(self.ids)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (a truly invalid byte sequence at the end of the generation)."""
        prefix_text = self.tok.decode(self.ids[self._prefix : self._read], self.skip_special)
        full_text = self.tok.decode(self.ids[self._prefix :], self.skip_special)
        self._prefix = self._read = len(self.ids)
        return full_text[len(prefix_text) :]


def encode_prompt(tokenizer: Tokenizer, req: GenerationRequest, max_context: int) -> list[int]:
    """Prompt token ids, or the EngineError (with the field to blame) that every backend answers alike."""
    for text, field in [(req.prompt, "prompt"), *((s, "stop") for s in req.stop.stop_strings)]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry lone surrogates ("\udb5b"), which no tokenizer can encode
            raise EngineError(f"{field} is not valid Unicode text (lone surrogate)", field) from None
    ids = tokenizer.encode(req.prompt)
    if req.add_bos:
        ids = [tokenizer.eod_id, *ids]
    if not ids:
        raise EngineError("Empty prompts require add_BOS=true", "add_BOS")
    if len(ids) + req.max_new_tokens > max_context:
        raise EngineError(
            f"Length of prompt + tokens_to_generate longer than allowed "
            f"({len(ids)} + {req.max_new_tokens} > {max_context})",
            "tokens_to_generate",
        )
    return ids
