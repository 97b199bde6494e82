"""Which sampling settings make the 5 M-parameter demo model read best — chosen by measure, not by taste.

    python benchmarks/demo_defaults.py [--corpus ../shared/corpus/fr.jsonl.gz] [--seeds 3] [--tokens 48]

A gateway serves the shipped model; for each setting of a grid (temperature, top-k, top-p, repetition penalty) it
continues the same prompts — the French prompts of `core/prompts.jsonl` and the first words of corpus documents —
with several seeds, and measures two things anyone can check in the continuations:
  - non-words: the share of words (letters only, lower-cased) that never occur twice in the reference corpus
    (Debian documentation in French, what the model was trained on): made-up words such as "focusverkentik";
  - repetition: the share of each continuation's word 3-grams that already occurred in it (greedy loops).
The score is their sum (lower is better); the table is sorted by it and written to bench-results/demo_defaults.json.
The CLI's `glotta generate` defaults and the README's examples use the winner.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import re
import statistics
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from glotta.clients.local_gateway import LocalGateway

ROOT = Path(__file__).resolve().parents[1]
WORD = re.compile(r"[^\W\d_]+")
console = Console()


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def lexicon(corpus: Path) -> set[str]:
    counts: Counter = Counter()
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        for line in f:
            counts.update(words(json.loads(line)["text"]))
    return {w for w, c in counts.items() if c >= 2}


def prompts(corpus: Path, n: int) -> list[str]:
    own = [json.loads(line)["prompt"] for line in (ROOT / "core" / "prompts.jsonl").read_text().splitlines()
           if json.loads(line)["lang"] == "fr"]
    docs = []
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 97 == 0:  # spread over the corpus
                docs.append(" ".join(json.loads(line)["text"].split()[:6]))
    return (own + docs)[:n]


def measure(texts: list[str], known: set[str]) -> dict:
    all_words = [w for t in texts for w in words(t)]
    nonword = sum(w not in known for w in all_words) / max(1, len(all_words))
    reps = []
    for t in texts:
        grams = list(zip(*(words(t)[i:] for i in range(3))))
        if grams:
            reps.append(1 - len(set(grams)) / len(grams))
    repetition = statistics.mean(reps) if reps else 0.0
    return {"nonword": nonword, "repetition": repetition, "score": nonword + repetition,
            "words": len(all_words) / max(1, len(texts))}


GRID = {"temperature": [0.0, 0.5, 0.7, 0.8, 1.0], "top_k": [0, 40], "top_p": [1.0, 0.9],
        "repetition_penalty": [1.0, 1.2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "fr.jsonl.gz")
    ap.add_argument("--model", default="glotta-fr-tiny")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    a = ap.parse_args()
    known = lexicon(a.corpus)
    texts_in = prompts(a.corpus, a.prompts)
    console.print(f"lexicon: {len(known):,} words seen twice or more in {a.corpus}; {len(texts_in)} prompts")
    rows = []
    with LocalGateway(["--model", a.model, "--threads", "2"]) as gw, httpx.Client(timeout=600) as http:
        for values in itertools.product(*GRID.values()):
            setting = dict(zip(GRID, values))
            if setting["temperature"] == 0 and (setting["top_k"] or setting["top_p"] < 1):
                continue  # greedy: top-k and top-p change nothing
            texts = []
            for seed in range(a.seeds if setting["temperature"] > 0 else 1):
                body = {"model": a.model, "prompt": texts_in, "max_tokens": a.tokens, "seed": seed, **setting}
                r = http.post(gw.url + "/v1/completions", json=body)
                r.raise_for_status()
                texts += [c["text"] for c in r.json()["choices"]]
            rows.append({**setting, **measure(texts, known), "example": texts[0]})
    rows.sort(key=lambda r: r["score"])
    t = Table(title=f"{a.model}: {len(texts_in)} prompts × {a.seeds} seeds × {a.tokens} tokens (lower is better)")
    for col in ("temperature", "top_k", "top_p", "rep. penalty", "non-words", "repetition", "score", "words"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(f"{r['temperature']:g}", str(r["top_k"]), f"{r['top_p']:g}", f"{r['repetition_penalty']:g}",
                  f"{r['nonword']:.3f}", f"{r['repetition']:.3f}", f"{r['score']:.3f}", f"{r['words']:.1f}")
    console.print(t)
    best = rows[0]
    console.print(f"best: {({k: best[k] for k in GRID})}; e.g. {texts_in[0]!r} → {best['example']!r}")
    default = next(r for r in rows if r["temperature"] == 1.0 and r["top_k"] == 0 and r["top_p"] == 1.0
                   and r["repetition_penalty"] == 1.0)
    console.print(f"the API's own defaults (temperature 1, no top-k/top-p, no penalty): score {default['score']:.3f} "
                  f"(non-words {default['nonword']:.3f}, repetition {default['repetition']:.3f}); "
                  f"e.g. → {default['example']!r}")
    out = ROOT / "bench-results" / "demo_defaults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
