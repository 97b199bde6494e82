"""Next-token choice on numpy logits, with Megatron's semantics (sampling.py) and a per-request RNG.

Each request owns its `numpy.random.Generator`, so a seeded request gives the same tokens whether it runs alone or
shares the batch with others.
"""

from __future__ import annotations

import numpy as np

from .interface import SamplingParams


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax (float32: fast, and precise enough for log-probs)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_logprobs(logprobs_row: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n most likely token ids with their log-probs, most likely first."""
    if n <= 0:
        return []
    idx = np.argpartition(-logprobs_row, n - 1)[:n]
    idx = idx[np.argsort(-logprobs_row[idx], kind="stable")]
    return [(int(i), float(logprobs_row[i])) for i in idx]


class Sampler:
    """Per-request sampling state: RNG and the decaying top-p."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng: np.random.Generator | None = None  # made at the first draw: greedy requests never pay for one
        self.top_p = params.top_p

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self.params.seed)
        return self._rng

    def choose(self, logits: np.ndarray) -> int:
        p = self.params
        if p.greedy:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / p.temperature
        if p.top_k > 1:
            k = min(p.top_k, scaled.shape[-1])
            kth = np.partition(scaled, -k)[-k]
            scaled = np.where(scaled < kth, -np.inf, scaled)
        if self.top_p > 0.0:  # Megatron's /api forbids top_k with top_p; OpenAI clients may send both
            scaled = self._nucleus(scaled, self.top_p)
            if p.top_p_decay > 0.0:
                self.top_p *= p.top_p_decay
                if p.top_p_bound > 0.0:
                    self.top_p = max(self.top_p, p.top_p_bound)
        probs = np.exp(scaled - scaled.max())
        total = probs.sum()
        if not np.isfinite(total) or total <= 0:  # degenerate logits: fall back to the most likely token
            return int(np.argmax(logits))
        return int(self.rng.choice(probs.shape[-1], p=probs / total))

    @staticmethod
    def _nucleus(scaled: np.ndarray, top_p: float) -> np.ndarray:
        order = np.argsort(-scaled, kind="stable")
        sorted_logits = scaled[order]
        probs = np.exp(sorted_logits - sorted_logits[0])
        cum = np.cumsum(probs / probs.sum())
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        cut = int(np.searchsorted(cum, top_p, side="left")) + 1
        out = np.full_like(scaled, -np.inf)
        keep = order[:cut]
        out[keep] = scaled[keep]
        return out
