"""The language-modeling loss of a `transformers` model on a Megatron dataset (perplexity = exp of it): what the local
trainer validates with and what the 2:4 export reports before and after pruning."""

from __future__ import annotations

import numpy as np

from glotta.core.megatron.indexed import MegatronDataset


def samples_of(ds: MegatronDataset, docs, seq: int, limit: int | None = None) -> np.ndarray:
    """Every full seq + 1 sample of the documents, concatenated in order (at most `limit`)."""
    flat = np.concatenate([ds[int(i)].astype(np.int64) for i in docs]) if len(docs) else np.zeros(0, np.int64)
    n = max(0, (len(flat) - 1) // seq)
    n = n if limit is None else min(n, limit)
    return np.stack([flat[i * seq : i * seq + seq + 1] for i in range(n)]) if n else np.zeros((0, seq + 1), np.int64)


def mean_loss(model, samples: np.ndarray, batch_size: int = 8, device: str = "cpu") -> float:
    """Token-mean cross-entropy of next-token prediction over samples of seq + 1 tokens."""
    import torch

    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            b = torch.from_numpy(samples[i : i + batch_size]).to(device)
            logits = model(input_ids=b[:, :-1]).logits
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"))
    model.train(was_training)
    return total / max(1, samples[:, 1:].size)
