"""The settings of one `glotta data prepare` run — the only place their defaults are written (the CLI reads them
from here). A work folder remembers the settings it was made with and refuses others."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field, model_validator

STAGES = ("clean", "quality", "lang", "blacklist", "dedup")
NEEDS_LANG = ("lang", "blacklist", "quality")


class PrepareConfig(BaseModel):
    inputs: list[str] = Field(description="input files, in the order that decides which duplicate is kept")
    output: str = Field(description="output folder (JSONL shards, stats.json, report.html)")
    lang: str = Field("", description="the language to keep (fr, es, ...)")
    stages: list[str] = Field(["clean", "lang", "blacklist", "dedup"],
                              description="blocks in order (add quality for the Gopher rules)")
    text_key: str | None = Field(None, description="JSON key of the text (default: text, else content)")
    min_chars: int = Field(256, description="clean: shorter documents are removed")
    lang_threshold: float = Field(0.65, description="lang: minimum fastText score of the language")
    blacklist: str | None = Field(None, description="term file (default: the shipped list for --lang)")
    blacklist_threshold: int = Field(2, description="distinct blacklisted terms that remove a document")
    shingle: int = Field(3, ge=1, description="dedup: words per shingle")
    bands: int = Field(32, ge=1, description="dedup: LSH bands")
    rows: int = Field(4, ge=1, description="dedup: MinHash rows per band")
    verify: float = Field(0.5, description="dedup: estimated Jaccard confirming a candidate")
    seed: int = Field(42, description="dedup: MinHash seed")

    @model_validator(mode="after")
    def _check(self) -> "PrepareConfig":
        if any(s not in STAGES for s in self.stages) or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"--stages: unknown or repeated stage in {self.stages} (choose from {', '.join(STAGES)})")
        if any(s in self.stages for s in NEEDS_LANG) and not self.lang:
            raise ValueError("--lang is required for the language, blacklist and quality stages")
        return self

    def settings_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json(exclude={"output"}).encode()).hexdigest()[:16]

    @property
    def dedups(self) -> bool:
        return "dedup" in self.stages

    def split(self) -> tuple[list[str], list[str]]:
        """(blocks before dedup, blocks after it): the filter step runs the first, the write step the second."""
        if not self.dedups:
            return list(self.stages), []
        i = self.stages.index("dedup")
        return self.stages[:i], self.stages[i + 1:]


def default(field: str):
    return PrepareConfig.model_fields[field].default


def describe(field: str) -> str:
    return PrepareConfig.model_fields[field].description or ""
