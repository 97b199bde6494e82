"""Data preparation benchmark: a ~50k-document French input built from ../shared/corpus (documents of random
corpus sentences, so distinct ones really are distinct), with injected exact copies and near-duplicates (1–10 % of
words substituted, deleted or inserted) and Spanish documents. Prints, in one run: documents/s per core for Glotta's
full chain (clean → lang → blacklist → exact + MinHash dedup) and for datatrove's stock MinHash pipeline (its own
virtual environment, since it needs numpy ≥ 2), and both dedup recall and precision against the injected truth.

    python benchmarks/data_prep.py [--corpus ../shared/corpus] [--docs 50000] [--datatrove-python PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(path: Path) -> list[str]:
    """Distinct corpus sentences of 30-250 characters (longer "sentences" are unpunctuated lists, e.g. error-code
    tables, that would make unrelated documents overlap)."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out += [s.strip() for s in SENTENCE.split(json.loads(line)["text"].replace("\n", " "))
                    if 30 < len(s.strip()) <= 250]
    return sorted(set(out))


def compose(rng: random.Random, pool: list[str]) -> str:
    text, paras = [], rng.randint(2, 4)
    for _ in range(paras):
        text.append(" ".join(rng.choice(pool) for _ in range(rng.randint(3, 5))))
    return "\n\n".join(text)


def edit(rng: random.Random, text: str, rate: float, vocab: list[str]) -> str:
    words = text.split(" ")
    for _ in range(max(1, round(rate * len(words)))):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[i] = rng.choice(vocab)
        elif op < 0.75 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    return " ".join(words)


def build(corpus: Path, out: Path, n: int, shards: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    fr, es = sentences(corpus / "fr.jsonl.gz"), sentences(corpus / "es.jsonl.gz")
    vocab = sorted({w for s in fr[:5000] for w in s.split()})
    n_es, n_exact, n_near = n // 12, n // 50, n // 12
    base = [compose(rng, fr) for _ in range(n - n_es - n_exact - n_near)]
    docs = [{"id": f"base-{i}", "text": t} for i, t in enumerate(base)]
    for i in range(n_exact):
        j = rng.randrange(len(base))
        docs.append({"id": f"exact-{i}-of-{j}", "text": base[j]})
    for i in range(n_near):
        j, rate = rng.randrange(len(base)), rng.uniform(0.01, 0.10)
        docs.append({"id": f"near-{i}-of-{j}-{rate:.3f}", "text": edit(rng, base[j], rate, vocab)})
    docs += [{"id": f"es-{i}", "text": compose(rng, es)} for i in range(n_es)]
    rng.shuffle(docs[len(base):])  # copies after their originals' shard order is not guaranteed: mix
    rng.shuffle(docs)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(shards):
        with gzip.open(out / f"part-{k:02d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for d in docs[k::shards]:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return {"docs": len(docs), "base": len(base), "exact": n_exact, "near": n_near, "es": n_es}


def score(all_ids: set[str], kept_ids: set[str], reached: set[str]) -> dict:
    """Recall over injected copies whose original reached dedup; precision over documents dedup removed: a removed
    document is right if it is a copy, or an original of which a copy was kept instead."""
    removed = reached - kept_ids
    copies = {i for i in reached if i.startswith(("exact-", "near-"))}
    originals = {f"base-{i.split('-of-')[1].split('-')[0]}" for i in copies}
    copies = {i for i in copies if f"base-{i.split('-of-')[1].split('-')[0]}" in reached}
    groups: dict[str, list[str]] = {}
    for i in copies:
        groups.setdefault(f"base-{i.split('-of-')[1].split('-')[0]}", []).append(i)
    # each cluster (original + its copies) should keep exactly one document
    should_remove = sum(len(g) for g in groups.values())
    found = sum(len([d for d in [o, *g] if d in removed]) for o, g in groups.items())
    wrong = len([d for d in removed if not d.startswith(("exact-", "near-")) and d not in originals])
    return {"recall": min(found, should_remove) / max(should_remove, 1), "precision": (len(removed) - wrong) /
            max(len(removed), 1), "removed": len(removed), "false_positives": wrong, "expected": should_remove}


def ids_in(folder: Path, pattern: str) -> set[str]:
    out = set()
    for p in sorted(folder.glob(pattern)):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            out |= {json.loads(line)["id"] for line in f}
    return out


def run_glotta(inp: Path, out: Path, workers: int, stages: str = "clean,lang,blacklist,dedup") -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "glotta.cli", "data", "prepare", "--input", f"{inp}/*.jsonl.gz",
                    "--lang", "fr", "--output", str(out), "--workers", str(workers), "--stages", stages], check=True,
                   stdout=subprocess.DEVNULL)
    took = time.perf_counter() - start
    return took, json.loads((out / "stats.json").read_text())


def datatrove_python(given: str | None) -> str:
    if given:
        return given
    venv = HERE.parent / ".venv-datatrove"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "datatrove[processing]", "orjson", "spacy"], check=True)
    return str(venv / "bin" / "python")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(HERE.parent.parent / "shared" / "corpus"))
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--datatrove-python")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="glotta-prep-bench-"))
    truth = build(Path(a.corpus), tmp / "input", a.docs, a.shards)
    print(f"input: {truth} in {a.shards} files under {tmp / 'input'}")
    all_ids = ids_in(tmp / "input", "*.jsonl.gz")
    rows = []
    for workers in (1, 2):
        took, stats = run_glotta(tmp / "input", tmp / f"glotta-{workers}", workers)
        kept = ids_in(tmp / f"glotta-{workers}", "part-*.jsonl.gz")
        reached = set()
        for p in sorted((tmp / f"glotta-{workers}" / ".work" / "a").glob("*.jsonl")):
            reached |= {json.loads(line)["id"] for line in p.open(encoding="utf-8")}
        s = score(all_ids, kept, reached)
        es_left = sum(i.startswith("es-") for i in kept)
        rows.append((f"glotta full chain, {workers} worker(s)", took, workers, s))
        print(f"glotta ({workers} workers): {took:.1f} s; stages: "
              + "; ".join(f"{n} {v['docs_in']}→{v['docs_out']} ({v['seconds']:.1f} CPU s)"
                          for n, v in stats["stages"].items())
              + f"; Spanish documents left: {es_left}")
    took, stats = run_glotta(tmp / "input", tmp / "glotta-dedup-first", 1, "dedup,clean,lang,blacklist")
    print(f"order dedup → clean → lang → blacklist, 1 worker: {took:.1f} s (vs {rows[0][1]:.1f} s for the default "
          f"clean → lang → blacklist → dedup); stages: "
          + "; ".join(f"{n} {v['docs_in']}→{v['docs_out']} ({v['seconds']:.1f} CPU s)" for n, v in stats["stages"].items()))
    py = datatrove_python(a.datatrove_python)
    start = time.perf_counter()
    r = subprocess.run([py, str(HERE / "datatrove_minhash.py"), str(tmp / "input"), str(tmp / "datatrove"),
                        "--workers", "1", "--tasks", str(a.shards)], capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode:
        print(r.stderr[-3000:])
        raise SystemExit("datatrove run failed")
    kept = ids_in(tmp / "datatrove" / "output", "*.jsonl.gz")
    rows.append(("datatrove stock MinHash (dedup only), 1 worker", took, 1, score(all_ids, kept, all_ids)))
    base = rows[-1][1] * rows[-1][2]
    print("\n| pipeline | s | docs/s | docs/s per core | × datatrove per core | dedup recall | precision |")
    print("|---|---|---|---|---|---|---|")
    for name, t, w, s in rows:
        print(f"| {name} | {t:.1f} | {truth['docs'] / t:,.0f} | {truth['docs'] / t / w:,.0f} | "
              f"{base / (t * w):.2f}× | {s['recall']:.4f} | {s['precision']:.4f} ({s['false_positives']} false "
              f"positives of {s['removed']} removed) |")
    print(f"\nwork folder: {tmp}")


if __name__ == "__main__":
    main()
