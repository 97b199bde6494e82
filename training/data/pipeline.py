"""`glotta data prepare`: shard pass A (blocks before dedup, dedup keys) → global dedup → shard pass B (blocks after
dedup, final JSONL) → stats.json + report.html.

Every step writes through a temporary name and a rename, and its last file is its completion marker, so a killed job
rerun with the same settings skips what is done and produces byte-identical output. Shards are the input files, in
sorted order; of duplicates, the one kept is the first in that order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from . import dedup
from .records import Doc, Malformed, read

STAGES = ("clean", "quality", "lang", "blacklist", "dedup")
DEFAULT_STAGES = ["clean", "lang", "blacklist", "dedup"]
LENGTH_BINS = [0, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 2**62]
EXAMPLES = 5


class PrepareConfig(BaseModel):
    inputs: list[str]
    output: str
    lang: str
    stages: list[str] = DEFAULT_STAGES
    text_key: str | None = None
    min_chars: int = 256
    lang_threshold: float = 0.65
    blacklist: str | None = None
    blacklist_threshold: int = 2
    shingle: int = 3
    bands: int = 32
    rows: int = 4
    verify: float = 0.5
    seed: int = 42

    def settings_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json(exclude={"output"}).encode()).hexdigest()[:16]

    @property
    def work(self) -> Path:
        return Path(self.output) / ".work"

    def split(self) -> tuple[list[str], list[str]]:
        if "dedup" not in self.stages:
            return list(self.stages), []
        i = self.stages.index("dedup")
        return self.stages[:i], self.stages[i + 1:]


def build_blocks(cfg: PrepareConfig, names: list[str]) -> list:
    from .filters import Blacklist, Clean, Language, Quality, load_terms

    make = {"clean": lambda: Clean(cfg.min_chars), "quality": lambda: Quality(cfg.lang),
            "lang": lambda: Language(cfg.lang, cfg.lang_threshold),
            "blacklist": lambda: Blacklist(load_terms(cfg.blacklist, cfg.lang), cfg.blacklist_threshold)}
    return [make[n]() for n in names]


class ShardStats:
    def __init__(self, names: list[str]) -> None:
        self.stages = {n: {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "seconds": 0.0,
                           "removed": Counter(), "examples": {}} for n in names}
        self.malformed: list[str] = []
        self.malformed_count = 0
        self.lengths = np.zeros(len(LENGTH_BINS) - 1, np.int64)
        self.read_docs = self.read_bytes = 0
        self.dedup_seconds = 0.0  # exact keys, signatures and band keys (pass A)

    def run(self, blocks: list, doc: Doc) -> bool:
        for block in blocks:
            s = self.stages[block.name]
            s["docs_in"] += 1
            s["bytes_in"] += len(doc.text.encode())
            start = time.perf_counter()
            reason = block(doc)
            s["seconds"] += time.perf_counter() - start
            if reason:
                s["removed"][reason] += 1
                ex = s["examples"].setdefault(reason, [])
                if len(ex) < EXAMPLES:
                    ex.append({**doc.provenance(), "text": doc.text[:600], **getattr(block, "example", {})})
                return False
            s["docs_out"] += 1
            s["bytes_out"] += len(doc.text.encode())
        return True

    def to_json(self, blocks: list) -> dict:
        out = {"stages": {n: {**s, "removed": dict(s["removed"])} for n, s in self.stages.items()},
               "malformed": {"count": self.malformed_count, "examples": self.malformed},
               "length_histogram": self.lengths.tolist(), "read": {"docs": self.read_docs, "bytes": self.read_bytes},
               "dedup_seconds": self.dedup_seconds}
        for b in blocks:
            if hasattr(b, "histogram"):
                out["language_histogram"] = dict(b.histogram)
        return out


def _jsonl(doc: Doc) -> bytes:
    return (json.dumps({"text": doc.text, **doc.provenance()}, ensure_ascii=False) + "\n").encode()


class AtomicFile:
    """A file written under a temporary name and renamed into place on success (bounded memory: it streams)."""

    def __init__(self, path: Path, gz: bool = False) -> None:
        self.path, self.gz = path, gz
        self.tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")

    def __enter__(self):
        self.raw = open(self.tmp, "wb")
        # mtime 0 and no name in the gzip header: the same documents give the same bytes
        self.f = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0) if self.gz else self.raw
        return self.f

    def __exit__(self, kind, *_) -> None:
        if self.gz:
            self.f.close()
        self.raw.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    with AtomicFile(path) as f:
        f.write(data)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with AtomicFile(path) as f:
        np.save(f, arr)


def pass_a(cfg: PrepareConfig, shard: int, chunk: int = 10_000) -> str:
    """Blocks before dedup over one input file, streamed: survivors are written as they come, their exact keys,
    MinHash signatures and band keys computed per chunk of `chunk` documents."""
    marker = cfg.work / "a" / f"{shard:05d}.stats.json"
    if marker.exists():
        return "skipped"
    names, _ = cfg.split()
    blocks = build_blocks(cfg, names)
    stats = ShardStats(names)
    keys: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list[Doc] = []

    def flush() -> None:
        if "dedup" in cfg.stages and pending:
            start = time.perf_counter()
            keys.append(dedup.keys([d.text for d in pending], cfg.shingle, cfg.bands * cfg.rows, cfg.seed,
                                   [d.folded for d in pending]))
            stats.dedup_seconds += time.perf_counter() - start
        pending.clear()

    with AtomicFile(cfg.work / "a" / f"{shard:05d}.jsonl") as out:
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
                if len(pending) >= chunk:
                    flush()
        flush()
    if "dedup" in cfg.stages:
        perms = cfg.bands * cfg.rows
        exact = np.concatenate([k[0] for k in keys]) if keys else np.zeros(0, np.uint64)
        sigs = np.concatenate([k[1] for k in keys]) if keys else np.zeros((0, perms), np.uint32)
        _save_npy(cfg.work / "a" / f"{shard:05d}.exact.npy", exact)
        _save_npy(cfg.work / "a" / f"{shard:05d}.sig.npy", sigs)
        _save_npy(cfg.work / "a" / f"{shard:05d}.bands.npy", dedup.band_keys(sigs, cfg.bands, cfg.rows))
    _atomic_write(marker, json.dumps(stats.to_json(blocks)).encode())
    return "done"


def global_dedup(cfg: PrepareConfig) -> str:
    marker = cfg.work / "dedup.json"
    if marker.exists() or "dedup" not in cfg.stages:
        return "skipped"
    n_shards = len(cfg.inputs)
    exact = np.concatenate([np.load(cfg.work / "a" / f"{i:05d}.exact.npy") for i in range(n_shards)])
    sigs = [np.load(cfg.work / "a" / f"{i:05d}.sig.npy", mmap_mode="r") for i in range(n_shards)]
    start = time.perf_counter()
    bands = [np.load(cfg.work / "a" / f"{i:05d}.bands.npy", mmap_mode="r") for i in range(n_shards)]
    dup_of, kind, sim = dedup.duplicates(exact, sigs, bands, cfg.verify)
    took = time.perf_counter() - start
    _save_npy(cfg.work / "dedup.dup_of.npy", dup_of)
    _save_npy(cfg.work / "dedup.kind.npy", kind)
    _save_npy(cfg.work / "dedup.sim.npy", sim)
    counts = [len(s) for s in sigs]
    _atomic_write(marker, json.dumps({"docs": int(len(exact)), "shard_sizes": counts, "seconds": took}).encode())
    return "done"


def _read_a(cfg: PrepareConfig, shard: int):
    with open(cfg.work / "a" / f"{shard:05d}.jsonl", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def pass_b(cfg: PrepareConfig, shard: int) -> str:
    """Drops this shard's duplicates, runs the blocks after dedup, writes the final part file."""
    marker = cfg.work / "b" / f"{shard:05d}.stats.json"
    if marker.exists():
        return "skipped"
    _, names = cfg.split()
    blocks = build_blocks(cfg, names)
    if "dedup" in cfg.stages:
        sizes = json.loads((cfg.work / "dedup.json").read_text())["shard_sizes"]
        rows = slice(sum(sizes[:shard]), sum(sizes[:shard + 1]))
        blocks.insert(0, Duplicates(*(np.load(cfg.work / f"dedup.{n}.npy", mmap_mode="r")[rows]
                                      for n in ("dup_of", "kind", "sim"))))
    stats = ShardStats([b.name for b in blocks])
    with AtomicFile(Path(cfg.output) / f"part-{shard:05d}.jsonl.gz", gz=True) as out:
        for rec in _read_a(cfg, shard):
            doc = Doc(rec["text"], rec["source"], rec["line"], rec["id"])
            if stats.run(blocks, doc):
                out.write(_jsonl(doc))
                stats.lengths[np.searchsorted(LENGTH_BINS, len(doc.text), side="right") - 1] += 1
    _atomic_write(marker, json.dumps(stats.to_json(blocks)).encode())
    return "done"


class Duplicates:
    """Pass B's dedup block: the global step's verdict on each document of the shard, read in order."""

    name = "dedup"

    def __init__(self, dup_of: np.ndarray, kind: np.ndarray, sim: np.ndarray) -> None:
        self.dup_of, self.kind, self.sim, self.row = dup_of, kind, sim, -1
        self.example: dict = {}  # what a removed document's example adds: the document kept in its place

    def __call__(self, doc: Doc) -> str | None:
        self.row += 1
        if self.dup_of[self.row] < 0:
            return None
        near = self.kind[self.row] == 2
        self.example = {"duplicate_of": int(self.dup_of[self.row]),
                        "estimated_jaccard": round(float(self.sim[self.row]), 3) if near else 1.0}
        return "near_duplicate" if near else "exact_duplicate"


def prepare_dirs(cfg: PrepareConfig) -> None:
    """Create the work folders; refuse to mix outputs of different settings."""
    (cfg.work / "a").mkdir(parents=True, exist_ok=True)
    (cfg.work / "b").mkdir(parents=True, exist_ok=True)
    saved = cfg.work / "config.json"
    if saved.exists():
        old = PrepareConfig.model_validate_json(saved.read_text())
        if old.settings_hash() != cfg.settings_hash():
            raise ValueError(f"{cfg.output} holds a run with other settings or inputs ({saved}); use another "
                             f"--output, or delete it to start again")
    else:
        _atomic_write(saved, cfg.model_dump_json(indent=2).encode())
