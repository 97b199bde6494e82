"""The quality block: Gopher's rules."""

from __future__ import annotations

from ..text import WORD

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
