"""What a request does to its row's logits before the next token is chosen, in vLLM's order: `logit_bias`, then
the repetition, frequency and presence penalties, then the grammar's mask (constraints.py).

The penalties follow their sources: OpenAI's frequency and presence penalties subtract `count × frequency +
(count > 0) × presence` for each token generated so far (not the prompt's); the repetition penalty (CTRL, as
transformers and vLLM apply it) divides a positive logit, or multiplies a negative one, of every token seen in the
prompt or the output. Only the tokens concerned are touched, so a large vocabulary costs nothing extra.
"""

from __future__ import annotations

import numpy as np

from .constraints import RowMatcher
from .interface import GenerationRequest


class RowLogits:
    def __init__(self, req: GenerationRequest, prompt_ids: list[int], matcher: RowMatcher | None) -> None:
        s = req.sampling
        self.bias_ids = np.array([i for i, _ in s.logit_bias], np.int64)
        self.bias = np.array([b for _, b in s.logit_bias], np.float32)
        self.repetition = s.repetition_penalty
        self.frequency, self.presence = s.frequency_penalty, s.presence_penalty
        self.counts: dict[int, int] = {}
        self.seen: set[int] = set(prompt_ids) if self.repetition != 1.0 else set()
        self.matcher = matcher

    @staticmethod
    def needed(req: GenerationRequest) -> bool:
        s = req.sampling
        return bool(s.logit_bias or s.repetition_penalty != 1.0 or s.frequency_penalty or s.presence_penalty
                    or req.constraint is not None)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        out = logits.astype(np.float32, copy=True)
        if len(self.bias_ids):
            out[self.bias_ids] += self.bias
        if self.repetition != 1.0 and self.seen:
            ids = np.fromiter(self.seen, np.int64, len(self.seen))
            v = out[ids]
            out[ids] = np.where(v > 0, v / self.repetition, v * self.repetition)
        if (self.frequency or self.presence) and self.counts:
            ids = np.fromiter(self.counts, np.int64, len(self.counts))
            n = np.fromiter(self.counts.values(), np.float32, len(self.counts))
            out[ids] -= n * self.frequency + self.presence
        if self.matcher is not None:
            out = self.matcher.mask(out)
        return out

    def accept(self, token: int) -> None:
        self.counts[token] = self.counts.get(token, 0) + 1
        if self.repetition != 1.0:
            self.seen.add(token)
        if self.matcher is not None:
            self.matcher.consume(token)

    @property
    def grammar_finished(self) -> bool:
        return self.matcher is not None and self.matcher.finished
