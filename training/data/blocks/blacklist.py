"""The blacklist block and its term lists (shipped per language, or the user's file)."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from ..config import default
from ..text import WORD, fold


def load_terms(path: str | None, lang: str) -> list[str]:
    """A user file, or the shipped list for `lang`: one term per line, `#` comments."""
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        res = files("glotta.training.data").joinpath("blacklists", f"{lang}.txt")
        if not res.is_file():
            raise FileNotFoundError(f"no shipped blacklist for {lang!r}: pass --blacklist FILE")
        text = res.read_text(encoding="utf-8")
    return [t.strip() for t in text.splitlines() if t.strip() and not t.lstrip().startswith("#")]


class Blacklist:
    """Removes documents holding at least `threshold` distinct blacklisted terms: whole words, case- and
    accent-insensitive; a multi-word term matches across whitespace and punctuation (`l'argent` = `l argent`)."""

    name = "blacklist"

    def __init__(self, terms: list[str], threshold: int = default("blacklist_threshold")) -> None:
        self.threshold = threshold
        folded = {" ".join(WORD.findall(fold(t))) for t in terms} - {""}
        self.single = {t for t in folded if " " not in t}  # a set lookup per word: no regex scan of the text
        self.multi = {t: re.compile(r"(?<!\w)" + r"\W+".join(map(re.escape, t.split())) + r"(?!\w)")
                      for t in folded - self.single}

    def matches(self, text: str) -> set[str]:
        return self._matches(fold(text))

    def _matches(self, folded: str) -> set[str]:
        words = set(WORD.findall(folded))
        hits = self.single & words
        hits.update(t for t, rx in self.multi.items() if t.split()[0] in words and rx.search(folded))
        return hits

    def __call__(self, doc) -> str | None:
        doc.folded = doc.folded or fold(doc.text)
        return "blacklist" if len(self._matches(doc.folded)) >= self.threshold else None
