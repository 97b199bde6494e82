"""What a streaming engine needs beyond the model's tokenizer (glotta.core.tokenizer): text deltas that never split a
character, and the prompt checks every backend answers alike."""

from __future__ import annotations

import asyncio
import codecs

from glotta.core.errors import context_exceeded, invalid
from glotta.core.tokenizer import Tokenizer

from ..bounds import prompt_fits
from .interface import GenerationRequest, check_request


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas without splitting multi-byte characters.

    Decoding one token at a time would emit U+FFFD for an accented letter whose bytes fall in two tokens; instead we
    decode a short window and only release text once it no longer ends in an incomplete character.
    """

    CONTEXT = 5  # prompt tokens decoded before the first generated one (as vLLM's detokenizer)

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True, prompt_ids: list[int] = ()) -> None:
        self.tok = tokenizer
        self.skip_special = skip_special
        # the window starts inside the prompt: a decoder that strips the text's first space (SentencePiece's
        # Metaspace, a Llama's) then keeps the space before the first generated word
        self.ids: list[int] = list(prompt_ids[-self.CONTEXT:])
        self._prefix = 0  # start of the window whose text was already released
        self._read = len(self.ids)  # end of released tokens
        # byte-level BPE: each token is bytes; an incremental UTF-8 decoder holds back an incomplete character
        self._bytes = tokenizer.token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace") if self._bytes is not None else None

    def add(self, token_id: int) -> str:
        if self._utf8 is not None:
            if self.skip_special and token_id in self.tok.special_ids:
                return ""
            return self._utf8.decode(self._bytes[token_id])
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
        if self._utf8 is not None:
            return self._utf8.decode(b"", final=True)
        prefix_text = self.tok.decode(self.ids[self._prefix : self._read], self.skip_special)
        full_text = self.tok.decode(self.ids[self._prefix :], self.skip_special)
        self._prefix = self._read = len(self.ids)
        return full_text[len(prefix_text) :]


INLINE_CHARS = 512  # a shorter prompt is tokenized on the event loop (~0.1 ms); a longer one in a worker thread


async def encode_text(tokenizer: Tokenizer, text: str, prompt: bool = True) -> list[int]:
    """Token ids of `text` (`prompt`: with the tokenizer's own special tokens, as a prompt), computed off the event
    loop when the text is long."""
    if len(text) <= INLINE_CHARS:
        return tokenizer.encode(text, special=prompt)
    return await asyncio.to_thread(tokenizer.encode, text, prompt)


async def encode_prompt(tokenizer: Tokenizer, req: GenerationRequest, max_context: int,
                        max_prompt: int | None = None) -> list[int]:
    """Prompt token ids, or the error (with the field to blame) that every backend answers alike.

    Everything that can refuse the request is checked before tokenizing, and a long prompt is tokenized in a worker
    thread (the tokenizer releases the GIL): a megabyte of text never stalls the event loop (health, other clients).
    """
    check_request(req)
    check_token_fields(tokenizer, req)
    if req.prompt_ids is not None:  # a prompt of token ids: taken as it is (lm-evaluation-harness sends these)
        ids = list(req.prompt_ids)
        if not ids and not req.add_bos:
            raise invalid("a prompt of token ids may not be empty", "prompt")
        return _with_bos(tokenizer, req, ids, max_context, max_prompt)
    for text, field in [(req.prompt, "prompt"), *((s, "stop") for s in req.stop.stop_strings)]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry lone surrogates ("\udb5b"), which no tokenizer can encode
            raise invalid(f"{field} is not valid Unicode text (lone surrogate)", field) from None
    if not prompt_fits(len(req.prompt), max_context, tokenizer.max_token_chars):
        raise context_exceeded(f"prompt of {len(req.prompt)} characters cannot fit in the model's context of "
                               f"{max_context} tokens", "prompt")
    ids = await encode_text(tokenizer, req.prompt)  # with the tokenizer's own special tokens (a Llama's <s>)
    return _with_bos(tokenizer, req, ids, max_context, max_prompt)


def _with_bos(tokenizer: Tokenizer, req: GenerationRequest, ids: list[int], max_context: int,
              max_prompt: int | None = None) -> list[int]:
    if req.add_bos or not ids:
        # Megatron's add_BOS prepends the end-of-document token; as OpenAI's API, an empty prompt is generated as
        # from the beginning of a new document
        if tokenizer.eod_id is None:
            raise invalid("this model has no end-of-document token to start the prompt with: send a non-empty "
                          "prompt", "add_bos" if req.add_bos else "prompt")
        ids = [tokenizer.eod_id, *ids]
    if max_prompt is not None and len(ids) > max_prompt:
        raise context_exceeded(f"prompt of {len(ids)} tokens is longer than the engine was built for "
                               f"({max_prompt} tokens: its max_input_len)", "prompt")
    if len(ids) + req.max_new_tokens > max_context:
        raise context_exceeded(f"Length of prompt + max_new_tokens longer than allowed "
                               f"({len(ids)} + {req.max_new_tokens} > {max_context})", "max_new_tokens")
    return ids


def check_token_fields(tokenizer: Tokenizer, req: GenerationRequest) -> None:
    """Token ids a client sent (its prompt, its logit_bias) inside the vocabulary, and its constraint compiled
    (constraints.py: a malformed schema or regex is a 400 here, before the request is queued)."""
    vocab = tokenizer.vocab_size
    for name, ids in (("prompt", req.prompt_ids or ()), ("logit_bias", (i for i, _ in req.sampling.logit_bias))):
        bad = next((i for i in ids if not (isinstance(i, int) and 0 <= i < vocab)), None)
        if bad is not None:
            raise invalid(f"token id {bad} is outside the vocabulary (0 to {vocab - 1})", name)
    if req.constraint is not None:
        from .constraints import grammars_for

        grammars_for(tokenizer).compiled(req.constraint)
