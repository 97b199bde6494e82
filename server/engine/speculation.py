"""Prompt-lookup speculative decoding: draft the next tokens from the row's own text, verify them in one pass.

A model this small, decoding one row, is bound by reading its weights once per step, not by arithmetic: a pass over
five tokens costs little more than a pass over one. When the text so far ends with an n-gram (n = 3, 2, 1) seen
earlier in the prompt or the generation, the tokens that followed it then are the draft; one pass scores the last
token and the draft together, and every drafted token that equals what the model chooses anyway is kept, plus the
model's own next token. The output is what plain greedy decoding gives (each token is still chosen from the logits of
exactly its prefix), only with fewer passes when the text repeats (lists, code, boilerplate, quotes of the prompt —
and the loops small models fall into). vLLM calls it n-gram speculation, TGI `--speculate`.
"""

from __future__ import annotations

N_MAX = 3


class NgramDrafter:
    """The n-grams of one row's tokens, indexed as they arrive: where each was last followed by a known token."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram → the position right after its latest occurrence
        self._indexed = 1  # n-grams ending before this position are in the index

    def propose(self, tokens_since: list[int], k: int) -> list[int]:
        """Add the row's new tokens, then up to `k` tokens that followed the latest earlier occurrence of the longest
        suffix n-gram (none if the suffix never occurred)."""
        seq = self.tokens
        seq += tokens_since
        end = len(seq)
        index = self._index
        for e in range(self._indexed, end):  # the n-grams ending at e, each followed by seq[e]
            for n in range(1, min(N_MAX, e) + 1):
                index[tuple(seq[e - n : e])] = e
        self._indexed = max(self._indexed, end)
        for n in range(min(N_MAX, end), 0, -1):
            at = index.get(tuple(seq[end - n :]))
            if at is not None:
                return seq[at : at + k]
        return []
