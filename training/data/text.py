"""Text normalization shared by the blocks and dedup: the folded form terms, stop words and dedup keys compare in."""

from __future__ import annotations

import re
import unicodedata

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]")
SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
NEWLINES = re.compile(r"\n{3,}")
WORD = re.compile(r"\w+")


_COMBINING: dict[int, None] = {}


def fold(text: str) -> str:
    """Lowercase without accents: the form blacklist terms, stop words and dedup keys are compared in."""
    if not _COMBINING:  # every combining mark, once per process (str.translate then runs in C)
        _COMBINING.update((cp, None) for cp in range(0x110000) if unicodedata.combining(chr(cp)))
    return unicodedata.normalize("NFKD", text.casefold()).translate(_COMBINING)
