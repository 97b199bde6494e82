"""Files that appear whole or not at all: written under a temporary name in the same folder, then renamed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path


class AtomicFile:
    """A binary file written under a temporary name and renamed into place on success; it streams (bounded memory).

    With `gz`, the gzip header has mtime 0 and no name, so the same content always gives the same bytes.
    """

    def __init__(self, path: str | Path, gz: bool = False) -> None:
        self.path, self.gz = Path(path), gz
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = open(self.tmp, "wb")
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


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    with AtomicFile(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
