"""Document blocks with one job each: `block(doc)` returns None to keep the document (possibly rewritten) or the
reason it is removed. Blocks are built once per worker process from the run's settings."""

from __future__ import annotations

from ..config import PrepareConfig


def build_blocks(cfg: PrepareConfig, names: list[str]) -> list:
    from .blacklist import Blacklist, load_terms
    from .clean import Clean
    from .language import Language
    from .quality import Quality

    make = {"clean": lambda: Clean(cfg.min_chars), "quality": lambda: Quality(cfg.lang),
            "lang": lambda: Language(cfg.lang, cfg.lang_threshold),
            "blacklist": lambda: Blacklist(load_terms(cfg.blacklist, cfg.lang), cfg.blacklist_threshold)}
    return [make[n]() for n in names]
