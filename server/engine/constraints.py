"""Structured outputs: a request's constraint (JSON object, JSON schema, regex, choice, Lark grammar) as a token mask
applied to its row's logits inside the engine's batch, with llguidance.

Why llguidance: it needs no torch, and it compiles a grammar lazily (~1 ms for any schema), where outlines-core
builds its whole token index first (6 s for a nested schema over a 50,000-token vocabulary here) — a gateway gets a
new schema with each request. Its mask costs 20–60 µs per token on this CPU (benchmarks/grammar_cost.py).

One `Grammars` per tokenizer: the llguidance view of the vocabulary (built once, ~0.3 s at 50,000 tokens), and the
matchers of recent constraints, compiled once and copied for each row. A constraint that does not compile is refused
before the request is queued, naming its field.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from glotta.core.errors import invalid

log = logging.getLogger("glotta.engine")
KINDS = ("json_object", "json_schema", "regex", "choice", "lark")
# JSON on one line, spaced as Python's json.dumps spaces it: no run of newlines for a small model to get lost in (a
# schema's own "x-guidance" options override these)
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CACHED_GRAMMARS = 256  # compiled constraints kept per tokenizer (least recently used dropped)


@dataclass(frozen=True)
class Constraint:
    """What the answer must match. `value`: the schema's JSON text, the regex, the choices as a JSON list, the Lark
    grammar; empty for json_object. `field`: the request field that carried it, for error messages."""

    kind: str
    value: str = ""
    field: str = "response_format"

    def grammar(self) -> str:
        """The llguidance grammar (its JSON form); a malformed constraint is a 400 naming its field."""
        import llguidance

        M = llguidance.LLMatcher
        try:
            if self.kind == "json_object":
                return M.grammar_from_json_schema({"type": "object"}, defaults=JSON_LAYOUT)
            if self.kind == "json_schema":
                return M.grammar_from_json_schema(json.loads(self.value), defaults=JSON_LAYOUT)
            if self.kind == "regex":
                return M.grammar_from_regex(self.value)
            if self.kind == "choice":
                choices = json.loads(self.value)
                if not choices or not all(isinstance(c, str) and c for c in choices):
                    raise ValueError("choices must be a non-empty list of non-empty strings")
                return M.grammar_from_lark("start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices))
            if self.kind == "lark":
                return M.grammar_from_lark(self.value)
        except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise invalid(f"{self.field}: {e}", self.field) from None
        raise invalid(f"{self.field}: constraint kind {self.kind!r} is not one of {', '.join(KINDS)}", self.field)


_BY_TOKENIZER: "weakref.WeakKeyDictionary" = None  # set below


def grammars_for(tokenizer) -> "Grammars":
    """The one `Grammars` of a Glotta tokenizer (its end tokens are where a complete grammar lets the row stop)."""
    g = _BY_TOKENIZER.get(tokenizer)
    if g is None:
        g = _BY_TOKENIZER.setdefault(tokenizer, Grammars(tokenizer.path.read_text(encoding="utf-8"),
                                                         sorted(tokenizer.stop_ids), tokenizer.vocab_size))
    return g


class Grammars:
    """The llguidance tokenizer of one model and its cache of compiled constraints (thread-safe: the event loop
    validates, the engine thread copies)."""

    def __init__(self, tokenizer_json: str, eos_ids: list[int], vocab_size: int) -> None:
        self._tokenizer_json = tokenizer_json
        self._eos = eos_ids
        self.vocab_size = vocab_size
        self._lltok = None
        self._cache: OrderedDict[Constraint, object] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def lltok(self):
        if self._lltok is None:
            import llguidance

            with self._lock:
                if self._lltok is None:
                    # a model with no end token: the grammar's end is reached when its matcher stops
                    self._lltok = llguidance.LLTokenizer(self._tokenizer_json, n_vocab=self.vocab_size,
                                                         eos_token=self._eos or None)
        return self._lltok

    def compiled(self, c: Constraint):
        """A pristine matcher of `c` (compiled at its first use); callers take a `deep_copy()`."""
        import llguidance

        with self._lock:
            m = self._cache.get(c)
            if m is not None:
                self._cache.move_to_end(c)
                return m
        m = llguidance.LLMatcher(self.lltok, c.grammar(), log_level=0)
        if m.is_error():
            raise invalid(f"{c.field}: {m.get_error()}", c.field)
        with self._lock:
            self._cache[c] = m
            while len(self._cache) > CACHED_GRAMMARS:
                self._cache.popitem(last=False)
        return m

    def matcher(self, c: Constraint) -> "RowMatcher":
        return RowMatcher(self.compiled(c).deep_copy(), self.vocab_size)


class RowMatcher:
    """One row's grammar state: the mask of the next token, and each chosen token consumed."""

    def __init__(self, matcher, vocab_size: int) -> None:
        from llguidance.numpy import allocate_token_bitmask

        self.m = matcher
        self.vocab = vocab_size
        self._bits = allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar forbids at -inf (a new array)."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.m, self._bits)
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")
        allowed = np.zeros(len(logits), bool)  # ids past the tokenizer's (a padded vocabulary) are never allowed
        n = min(len(logits), self.vocab)
        allowed[:n] = bits[:n]
        return np.where(allowed, logits, np.float32(-np.inf))

    def consume(self, token: int) -> None:
        if not self.m.consume_token(token):
            raise RuntimeError(f"grammar refused token {token}: {self.m.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar is complete and admits no further token (only an end token, which the model may lack)."""
        return self.m.is_stopped()


_BY_TOKENIZER = weakref.WeakKeyDictionary()
