"""Per-shard statistics of a prepare run: documents and bytes in and out of each block, CPU time, removal reasons
with examples, malformed records, output lengths. The report merges the shards' files."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from .records import Doc

LENGTH_BINS = [0, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 2**62]
EXAMPLES = 5


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
