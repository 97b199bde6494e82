"""Exact and MinHash-LSH near-duplicate detection over many shards, with bounded memory.

Per document (in the shard workers): a 64-bit hash of the normalized text, a MinHash signature of its word n-gram
shingles (rensa, Rust: ~300k signatures/s on one core, so shingling in Python is the cost) and its band keys.
Globally: one band at a time, that band's keys of every shard are read from memory-mapped files, sorted, and
documents sharing a key become candidates, confirmed only if their signatures' estimated Jaccard reaches the threshold
(this removes the false positives NeMo Curator's optional Jaccard check targets). Then, in input order, a document is
removed when it is confirmed similar to a document that is kept: unlike connected components (datatrove, NeMo
Curator), no chain A ~ B ~ C removes C in favour of an unrelated A.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .text import WORD, fold


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


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[bands, docs] 64-bit keys (FNV-style mix of each band's rows of minima); band-major so the global step reads
    one band of a shard as one contiguous block."""
    out = np.empty((bands, len(sig)), np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            part = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
            key = np.full(len(part), 1469598103934665603, np.uint64)
            for col in range(rows):
                key = (key ^ part[:, col]) * np.uint64(1099511628211)
            out[band] = key
    return out


def duplicates(exact: np.ndarray, sigs: list[np.ndarray], band_files: list[np.ndarray], verify: float,
               max_checks: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(duplicate_of, kind, similarity) for documents in global input order: duplicate_of is -1 for kept
    documents, else the kept document it duplicates; kind 1 = exact, 2 = near; similarity = estimated Jaccard.

    Edges join a document to earlier ones: same exact key, or same LSH band key with signatures agreeing on at least
    `verify` of the permutations (checked against at most `max_checks` earlier members of a bucket). Then, in input
    order, a document is removed when it has an edge to a document that is kept — so every removed document is
    directly similar to the one kept in its place, with no chains (A ~ B ~ C removing C for A). `sigs` [docs, perms]
    and `band_files` [bands, docs] are per shard (memory-mapped): one band of every shard is in memory at a time."""
    n = len(exact)
    edges: dict[int, dict[int, float]] = {}  # later document → {earlier document: similarity}
    order = np.argsort(exact, kind="stable")
    same = np.flatnonzero(exact[order][1:] == exact[order][:-1])
    first = {}
    for i in same:  # every later copy points at the first document with that key
        a, b = int(order[i]), int(order[i + 1])
        head = first.setdefault(int(exact[a]), min(a, b))
        for d in (a, b):
            if d != head:
                edges.setdefault(d, {})[head] = 2.0  # 2.0 marks an exact edge
    offsets = np.cumsum([0] + [len(s) for s in sigs])

    def sig(i: int) -> np.ndarray:
        shard = int(np.searchsorted(offsets, i, side="right") - 1)
        return np.asarray(sigs[shard][i - offsets[shard]])

    bands = band_files[0].shape[0] if band_files else 0
    for band in range(bands):
        keys = np.concatenate([np.asarray(b[band]) for b in band_files]) if n else np.zeros(0, np.uint64)
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = np.sort(order[start:start + size]).tolist()
            for k, m in enumerate(members[1:], 1):
                known = edges.get(m, {})
                for earlier in members[max(0, k - max_checks):k]:
                    if earlier in known:
                        break
                    est = float(np.mean(sig(m) == sig(earlier)))
                    if est >= verify:
                        edges.setdefault(m, {})[earlier] = est
                        break
    dup_of = np.full(n, -1, np.int64)
    kind = np.zeros(n, np.int8)
    similarity = np.zeros(n, np.float32)
    for j in sorted(edges):  # in input order: the earlier documents' fate is already decided
        kept = [i for i in sorted(edges[j]) if dup_of[i] < 0]
        if kept:
            i = kept[0]
            dup_of[j], sim = i, edges[j][i]
            kind[j], similarity[j] = (1, 1.0) if sim == 2.0 else (2, sim)
    return dup_of, kind, similarity
