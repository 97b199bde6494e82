"""`glotta prompt eval`: a template's accuracy (classification) or exact match / chrF (generation) on labelled data,
for several k (0/1/few-shot) and for each paraphrase of its pattern — the source talk's manual vs paraphrased prompt
comparison — through a running gateway, as a table, a JSON file and a PNG bar chart.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .client import AsyncGlottaClient


class DataError(ValueError):
    """A labelled-data line that cannot be used, with its file and line number."""


@dataclass
class Cell:
    k: int
    paraphrase: int
    metric: str
    value: float
    chrf: float | None
    n: int


def read_data(path: Path, inputs: list[str], classification: bool) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
            key = "label" if classification else "answer"
            if not isinstance(row, dict) or not isinstance(row.get("inputs"), dict) or key not in row:
                raise DataError(f"{path}:{line_no}: expected {{\"inputs\": {{...}}, \"{key}\": ...}}")
            missing = [n for n in inputs if n not in row["inputs"]]
            if missing:
                raise DataError(f"{path}:{line_no}: missing input {missing[0]!r}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def _norm(s: str) -> str:
    return " ".join(s.lower().strip().strip(".").split())


async def evaluate(url: str, name: str, data: Path, ks: list[int], paraphrases: bool, model: str | None,
                   concurrency: int = 8) -> tuple[dict, list[Cell]]:
    async with AsyncGlottaClient(url) as client:
        template = await client.template(name)
        classification = template["mode"] == "score"
        rows = read_data(data, template["inputs"], classification)
        n_patterns = 1 + (len(template["paraphrases"]) if paraphrases else 0)
        sem = asyncio.Semaphore(concurrency)

        async def answer(row: dict, k: int, p: int) -> dict:
            async with sem:
                return await client.run_template(name, row["inputs"], k=k, paraphrase=p, model=model)

        cells = []
        for k in ks:
            for p in range(n_patterns):
                outs = await asyncio.gather(*(answer(r, k, p) for r in rows))
                if classification:
                    hits = sum(o["label"] == r["label"] for o, r in zip(outs, rows))
                    cells.append(Cell(k, p, "accuracy", hits / len(rows), None, len(rows)))
                else:
                    import sacrebleu

                    hyps = [o["answer"] for o in outs]
                    refs = [r["answer"] for r in rows]
                    em = sum(_norm(h) == _norm(r) for h, r in zip(hyps, refs)) / len(rows)
                    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
                    cells.append(Cell(k, p, "exact match", em, chrf, len(rows)))
    if classification:
        majority = Counter(r["label"] for r in rows).most_common(1)[0][1] / len(rows)
        template["baseline"] = {"majority class": majority, "chance": 1 / len(template["verbalizer"])}
    return template, cells


def save_chart(template: dict, cells: list[Cell], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({c.k for c in cells})
    ps = sorted({c.paraphrase for c in cells})
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(ks), 3.6))
    width = 0.8 / len(ps)
    for j, p in enumerate(ps):
        vals = [next(c.value for c in cells if c.k == k and c.paraphrase == p) for k in ks]
        label = "pattern" if p == 0 else f"paraphrase {p}"
        ax.bar([i + j * width for i in range(len(ks))], vals, width, label=label)
    lines: dict[float, list[str]] = {}
    for name, v in (template.get("baseline") or {}).items():
        lines.setdefault(round(v, 4), []).append(name)
    for v, names in lines.items():  # one line per value: "majority class = chance" when they coincide
        ax.axhline(v, linestyle="--", linewidth=1, color="grey")
        ax.text(len(ks) - 0.5, v, " = ".join(names), va="bottom", ha="right", fontsize=8, color="grey")
    ax.set_xticks([i + width * (len(ps) - 1) / 2 for i in range(len(ks))], [f"{k}-shot" for k in ks])
    ax.set_ylim(0, 1)
    ax.set_ylabel(cells[0].metric)
    ax.set_title(f"{template['name']} ({cells[0].n} examples)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_json(template: dict, cells: list[Cell], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"template": template["name"], "baseline": template.get("baseline"), "cells": [asdict(c) for c in cells]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False))
    tmp.replace(path)
    return path
