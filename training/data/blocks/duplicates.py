"""The dedup block of the write step: the find-duplicates step's verdict on each document of a shard, in order."""

from __future__ import annotations

import numpy as np

from ..records import Doc


class Duplicates:
    """Removes the documents the find-duplicates step marked; a removed one's example names the one kept."""

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
