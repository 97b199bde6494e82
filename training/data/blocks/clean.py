"""The clean block."""

from __future__ import annotations

import unicodedata

from ..config import default
from ..text import CONTROL, NEWLINES, SPACES


class Clean:
    """Unicode NFKC, control characters out, runs of spaces and of blank lines collapsed; then a minimum length."""

    name = "clean"

    def __init__(self, min_chars: int = default("min_chars")) -> None:
        self.min_chars = min_chars

    def __call__(self, doc) -> str | None:
        text = unicodedata.normalize("NFKC", doc.text).replace("\r\n", "\n").replace("\r", "\n")
        text = CONTROL.sub("", text)
        text = "\n".join(SPACES.sub(" ", line).strip() for line in text.split("\n"))
        doc.text, doc.folded = NEWLINES.sub("\n\n", text).strip(), None
        return "too_short" if len(doc.text) < self.min_chars else None
