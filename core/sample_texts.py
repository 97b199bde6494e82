"""Short French and Spanish prompts shipped with Glotta (core/prompts.jsonl): what load tests send and what INT8
calibration reads when no dataset is given. One file, one reader: packages use this API, never the file."""

from __future__ import annotations

import json
from importlib.resources import files


def sample_prompts() -> list[dict]:
    """[{"prompt": ..., "lang": "fr" | "es"}, ...], in the file's order."""
    text = files(__package__).joinpath("prompts.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
