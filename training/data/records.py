"""Input records: OSCAR 2019 text (one document per line), OSCAR 21+ JSONL (`content`), mC4 / own JSONL (`text`).

A shard is one input file, read as a stream. Malformed records (invalid UTF-8, bad JSON, missing or non-string key)
come out as `Malformed` with file and line so they are counted and reported, never fatal, never silently lost.
"""

from __future__ import annotations

import glob
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TEXT_KEYS = ("text", "content")  # mC4 / own JSONL, OSCAR 21+


@dataclass
class Doc:
    text: str
    source: str
    line: int
    id: str
    folded: str | None = None  # fold(text), kept by the first block that needs it (blocks after `clean` only)

    def provenance(self) -> dict:
        return {"source": self.source, "line": self.line, "id": self.id}


@dataclass
class Malformed:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


def expand(patterns: list[str]) -> list[Path]:
    """Sorted files matching the globs (a fixed order makes the output reproducible); error naming an empty glob."""
    files: list[Path] = []
    for p in patterns:
        hits = sorted(glob.glob(p, recursive=True)) or ([p] if Path(p).is_file() else [])
        if not hits:
            raise FileNotFoundError(f"{p}: no input file matches")
        files += [Path(h) for h in hits]
    return sorted(dict.fromkeys(files))


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read(path: Path, text_key: str | None = None) -> Iterator[Doc | Malformed]:
    name = str(path)
    is_text = path.name.removesuffix(".gz").endswith(".txt")
    with _open(path) as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Malformed(name, n, f"invalid UTF-8 at byte {e.start}")
                continue
            if not line.strip():
                continue
            if is_text:
                yield Doc(line.rstrip("\n"), name, n, f"{path.name}:{n}")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield Malformed(name, n, f"bad JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                yield Malformed(name, n, "not a JSON object")
                continue
            key = text_key or next((k for k in TEXT_KEYS if k in obj), TEXT_KEYS[0])
            text = obj.get(key)
            if not isinstance(text, str):
                yield Malformed(name, n, f"missing or non-string key {key!r}")
                continue
            yield Doc(text, name, n, str(obj.get("id", f"{path.name}:{n}")))
