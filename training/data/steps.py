"""The steps of `glotta data prepare`, each resumable on its own:

1. `filter_shard`    per input file: the blocks before dedup, streamed; survivors written, with their exact keys,
                     MinHash signatures and LSH band keys (computed per chunk of documents)
2. `find_duplicates` once, over every shard's keys: which document duplicates which (kept: the first in input order)
3. `write_shard`     per input file: drop the duplicates, run the blocks after dedup, write the final part file
4. `write_report`    stats.json and report.html

Every step writes through a temporary name and a rename, and its last file is its completion marker, so a killed job
rerun with the same settings skips what is done and produces byte-identical output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from glotta.core.atomic import AtomicFile, atomic_write

from . import dedup
from .blocks import build_blocks
from .blocks.duplicates import Duplicates
from .config import PrepareConfig
from .records import Doc, Malformed, read
from .stats import LENGTH_BINS, ShardStats
from .workfolder import WorkFolder

CHUNK = 10_000  # documents whose dedup keys are computed together


def _jsonl(doc: Doc) -> bytes:
    return (json.dumps({"text": doc.text, **doc.provenance()}, ensure_ascii=False) + "\n").encode()


def _save_npy(path, arr: np.ndarray) -> None:
    with AtomicFile(path) as f:
        np.save(f, arr)


def filter_shard(cfg: PrepareConfig, shard: int) -> str:
    folder = WorkFolder(cfg)
    marker = folder.filtered(shard, "stats.json")
    if marker.exists():
        return "skipped"
    names, _ = cfg.split()
    blocks = build_blocks(cfg, names)
    stats = ShardStats(names)
    keys: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list[Doc] = []

    def flush() -> None:
        if cfg.dedups and pending:
            start = time.perf_counter()
            keys.append(dedup.keys([d.text for d in pending], cfg.shingle, cfg.bands * cfg.rows, cfg.seed,
                                   [d.folded for d in pending]))
            stats.dedup_seconds += time.perf_counter() - start
        pending.clear()

    with AtomicFile(folder.filtered(shard)) as out:
        for rec in read(Path(cfg.inputs[shard]), cfg.text_key):
            if isinstance(rec, Malformed):
                stats.malformed_count += 1
                if len(stats.malformed) < 20:
                    stats.malformed.append(str(rec))
                continue
            stats.read_docs += 1
            stats.read_bytes += len(rec.text.encode())
            if stats.run(blocks, rec):
                out.write(_jsonl(rec))
                pending.append(rec)
                if len(pending) >= CHUNK:
                    flush()
        flush()
    if cfg.dedups:
        perms = cfg.bands * cfg.rows
        exact = np.concatenate([k[0] for k in keys]) if keys else np.zeros(0, np.uint64)
        sigs = np.concatenate([k[1] for k in keys]) if keys else np.zeros((0, perms), np.uint32)
        _save_npy(folder.filtered(shard, "exact.npy"), exact)
        _save_npy(folder.filtered(shard, "sig.npy"), sigs)
        _save_npy(folder.filtered(shard, "bands.npy"), dedup.band_keys(sigs, cfg.bands, cfg.rows))
    atomic_write(marker, json.dumps(stats.to_json(blocks)))
    return "done"


def find_duplicates(cfg: PrepareConfig) -> str:
    folder = WorkFolder(cfg)
    if folder.dedup_marker.exists() or not cfg.dedups:
        return "skipped"
    shards = range(len(cfg.inputs))
    exact = np.concatenate([np.load(folder.filtered(i, "exact.npy")) for i in shards])
    sigs = [np.load(folder.filtered(i, "sig.npy"), mmap_mode="r") for i in shards]
    start = time.perf_counter()
    bands = [np.load(folder.filtered(i, "bands.npy"), mmap_mode="r") for i in shards]
    dup_of, kind, sim = dedup.duplicates(exact, sigs, bands, cfg.verify)
    took = time.perf_counter() - start
    for name, arr in (("dup_of", dup_of), ("kind", kind), ("sim", sim)):
        _save_npy(folder.dedup_array(name), arr)
    counts = [len(s) for s in sigs]
    atomic_write(folder.dedup_marker, json.dumps({"docs": int(len(exact)), "shard_sizes": counts, "seconds": took}))
    return "done"


def filtered_records(cfg: PrepareConfig, shard: int):
    with open(WorkFolder(cfg).filtered(shard), encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def write_shard(cfg: PrepareConfig, shard: int) -> str:
    folder = WorkFolder(cfg)
    marker = folder.written_marker(shard)
    if marker.exists():
        return "skipped"
    _, names = cfg.split()
    blocks = build_blocks(cfg, names)
    if cfg.dedups:
        sizes = json.loads(folder.dedup_marker.read_text())["shard_sizes"]
        rows = slice(sum(sizes[:shard]), sum(sizes[:shard + 1]))
        blocks.insert(0, Duplicates(*(np.load(folder.dedup_array(n), mmap_mode="r")[rows]
                                      for n in ("dup_of", "kind", "sim"))))
    stats = ShardStats([b.name for b in blocks])
    with AtomicFile(folder.part(shard), gz=True) as out:
        for rec in filtered_records(cfg, shard):
            doc = Doc(rec["text"], rec["source"], rec["line"], rec["id"])
            if stats.run(blocks, doc):
                out.write(_jsonl(doc))
                stats.lengths[np.searchsorted(LENGTH_BINS, len(doc.text), side="right") - 1] += 1
    atomic_write(marker, json.dumps(stats.to_json(blocks)))
    return "done"


def write_report(cfg: PrepareConfig) -> dict:
    from .report import write

    return write(cfg)


SHARD_STEPS = {"filter": filter_shard, "write": write_shard}
