"""Megatron-core's GPT sampling, sample for sample, in numpy: which tokens the i-th training sample holds.

Follows megatron/core/datasets: the split string becomes document ranges (blended_megatron_dataset_config's
parse_and_normalize_split and convert_split_vector_to_split_matrix, rounded as blended_megatron_dataset_builder does);
gpt_dataset's document index (every epoch's documents, shuffled together with RandomState(seed); the final epoch
shuffled apart when it supplies under 80 % of an epoch's samples), sample index (helpers.cpp build_sample_idx: samples
of seq + 1 tokens across document boundaries, consecutive samples sharing one token) and shuffle index. A test
compares it with megatron-core's GPTDataset on the same `.bin/.idx`, sample by sample.
"""

from __future__ import annotations

import re
from functools import reduce

import numpy as np

from glotta.core.megatron.indexed import MegatronDataset

EXTRA = 1  # add_extra_token_to_sequence: samples are seq + 1 tokens (input and shifted labels)


def split_ranges(n_docs: int, split: str) -> list[tuple[int, int] | None]:
    """Document ranges of the train, valid and test splits (None: empty)."""
    weights = [float(x) for x in re.findall(r"[.0-9]+", split)]
    weights = weights + [0.0] * (3 - len(weights))
    total = float(np.sum(np.array(weights, dtype=np.float64)))
    weights = (np.array(weights, dtype=np.float64) / total).tolist()
    bounds = reduce(lambda a, b: a + [a[len(a) - 1] + b], [[0], *weights])
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out.append(None if hi <= lo else (int(round(lo * float(n_docs))), int(round(hi * float(n_docs)))))
    return out


def document_index(docs: np.ndarray, epochs: int, rng: np.random.RandomState, separate_final: bool) -> np.ndarray:
    if not separate_final or epochs == 1:
        index = np.mgrid[0:epochs, 0:len(docs)][1]
        index[:] = docs
        index = index.reshape(-1).astype(np.int32)
        rng.shuffle(index)
        return index
    return np.concatenate((document_index(docs, epochs - 1, rng, False), document_index(docs, 1, rng, False)))


def sample_index(sizes: np.ndarray, doc_index: np.ndarray, seq: int, epochs: int, tokens_per_epoch: int) -> np.ndarray:
    """[samples + 1, 2]: (position in the document index, offset in that document) where each sample starts."""
    n = (epochs * tokens_per_epoch - EXTRA) // seq
    out = np.zeros((n + 1, 2), np.int64)
    d, offset = 0, 0
    for i in range(1, n + 1):
        remaining = seq + EXTRA
        while remaining != 0:
            length = int(sizes[doc_index[d]]) - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - EXTRA
                remaining = 0
            else:
                if d == len(doc_index) - 1:  # the end of the documents
                    offset = int(sizes[doc_index[d]]) - EXTRA
                    break
                d, offset = d + 1, 0
        out[i] = d, offset
    return out


def shuffle_index(num_samples: int, total: int, rng: np.random.RandomState) -> np.ndarray:
    first = np.arange(0, num_samples, dtype=np.uint32)
    rng.shuffle(first)
    if num_samples == total:
        return first
    last = np.arange(num_samples, total, dtype=np.uint32)
    rng.shuffle(last)
    return np.concatenate((first, last))


class GPTSamples:
    """`num_samples` samples of seq + 1 tokens from the documents `docs` of `ds`, in megatron-core's order."""

    def __init__(self, ds: MegatronDataset, docs: np.ndarray, seq: int, seed: int, num_samples: int) -> None:
        self.ds, self.seq = ds, seq
        sizes = ds.lengths
        tokens_per_epoch = int(np.sum(sizes[docs]))
        if tokens_per_epoch <= EXTRA:
            raise ValueError(f"{tokens_per_epoch} tokens cannot make one sample of {seq + EXTRA}")
        epochs, tokens = 1, tokens_per_epoch
        while tokens < num_samples * seq + EXTRA:
            epochs, tokens = epochs + 1, tokens + tokens_per_epoch
        separate_final = False
        if epochs > 1:
            sans_final = ((epochs - 1) * tokens_per_epoch - EXTRA) // seq
            per_epoch = (tokens_per_epoch - EXTRA) // seq
            separate_final = num_samples - sans_final < int(0.80 * per_epoch)
        rng = np.random.RandomState(seed)
        self.document_index = document_index(np.asarray(docs, np.int32), epochs, rng, separate_final)
        self.sample_index = sample_index(sizes, self.document_index, seq, epochs, tokens_per_epoch)
        total = len(self.sample_index) - 1
        self.shuffle_index = shuffle_index(sans_final if separate_final else total, total, rng)

    def __len__(self) -> int:
        return len(self.shuffle_index)

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(self.shuffle_index[i])
        (d0, o0), (d1, o1) = self.sample_index[i], self.sample_index[i + 1]
        if d0 == d1:
            return self.ds[int(self.document_index[d0])][o0 : o1 + EXTRA].astype(np.int64)
        parts = [self.ds[int(self.document_index[d0])][o0:]]
        parts += [self.ds[int(self.document_index[d])] for d in range(d0 + 1, d1)]
        parts.append(self.ds[int(self.document_index[d1])][: o1 + EXTRA])
        return np.concatenate(parts).astype(np.int64)
