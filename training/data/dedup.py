"""Exact and MinHash-LSH near-duplicate detection over many shards, with bounded memory.

Per document (in the shard workers): a 64-bit hash of the normalized text, and a MinHash signature of its word
n-gram shingles (rensa, Rust: ~300k signatures/s on one core, so shingling in Python is the cost). Globally: one band
at a time, the band keys of every shard are read from memory-mapped signature files, sorted, and documents sharing a
key become candidates; a candidate joins a cluster only if the signatures' estimated Jaccard confirms it (this removes
the false positives that NeMo Curator's optional Jaccard check targets). One document — the first in input order —
is kept per cluster.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from .filters import fold

WORD = re.compile(r"\w+")


def words(text: str, folded: str | None = None) -> list[str]:
    """The normalized words both keys are made of: case, accents and punctuation do not count."""
    return WORD.findall(folded if folded is not None else fold(text))


def exact_key(ws: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(ws).encode(), digest_size=8).digest(), "little")


def shingles(ws: list[str], n: int) -> list[str]:
    if len(ws) <= n:
        return [" ".join(ws)]
    return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def keys(texts: list[str], n: int, num_perm: int, seed: int, folded: list[str | None] | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """(exact keys [docs] uint64, MinHash signatures [docs, num_perm] uint32); `folded` reuses fold(text)."""
    from rensa import RMinHash

    if not texts:
        return np.zeros(0, np.uint64), np.zeros((0, num_perm), np.uint32)
    ws = [words(t, f) for t, f in zip(texts, folded or [None] * len(texts))]
    exact = np.array([exact_key(w) for w in ws], np.uint64)
    matrix = RMinHash.digest_matrix_from_token_sets([shingles(w, n) for w in ws], num_perm=num_perm, seed=seed)
    return exact, np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(texts), num_perm)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Chance that two documents of this Jaccard similarity share at least one band: the LSH S-curve."""
    return 1 - (1 - jaccard**rows) ** bands


def s_curve(bands: int, rows: int, points=(0.5, 0.6, 0.7, 0.8, 0.9)) -> dict[str, float]:
    return {f"{j:.1f}": round(candidate_probability(j, bands, rows), 4) for j in points}


def band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """64-bit key of each document's band (FNV-style mix of the rows' minima)."""
    part = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
    key = np.full(len(part), 1469598103934665603, np.uint64)
    with np.errstate(over="ignore"):
        for col in range(rows):
            key = (key ^ part[:, col]) * np.uint64(1099511628211)
    return key


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller index (earlier in the input) stays the root: it is the document kept
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicates(exact: np.ndarray, sigs: list[np.ndarray], bands: int, rows: int, verify: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(duplicate_of, kind, similarity) for documents in global input order: duplicate_of is -1 for kept
    documents, else the kept document of its cluster; kind 1 = exact, 2 = near. `sigs` are per-shard (memmaps)."""
    n = len(exact)
    uf = UnionFind(n)
    kind = np.zeros(n, np.int8)
    order = np.argsort(exact, kind="stable")
    same = np.flatnonzero(exact[order][1:] == exact[order][:-1])
    for i in same:
        uf.union(int(order[i]), int(order[i + 1]))
        kind[max(order[i], order[i + 1])] = 1
    offsets = np.cumsum([0] + [len(s) for s in sigs])

    def sig(i: int) -> np.ndarray:
        shard = int(np.searchsorted(offsets, i, side="right") - 1)
        return np.asarray(sigs[shard][i - offsets[shard]])

    similarity = np.zeros(n, np.float32)
    for band in range(bands):
        keys = np.concatenate([band_keys(np.asarray(s), band, rows) for s in sigs]) if n else np.zeros(0, np.uint64)
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = np.sort(order[start:start + size])
            head = int(members[0])
            head_sig = sig(head)
            for m in members[1:]:
                m = int(m)
                if uf.find(m) == uf.find(head):
                    continue
                est = float(np.mean(sig(m) == head_sig))
                if est >= verify:
                    uf.union(head, m)
                    if kind[m] == 0:
                        kind[m], similarity[m] = 2, est
    roots = np.array([uf.find(i) for i in range(n)], np.int64)
    dup_of = np.where(roots == np.arange(n), -1, roots)
    kind[dup_of < 0] = 0
    return dup_of, kind, similarity
