"""stats.json (merged from the shards' step files) and a self-contained HTML report with plots."""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter

from glotta.core.atomic import atomic_write

from . import dedup
from .config import PrepareConfig
from .stats import EXAMPLES, LENGTH_BINS
from .workfolder import WorkFolder


def _merge_stage(into: dict, s: dict) -> None:
    for k in ("docs_in", "docs_out", "bytes_in", "bytes_out", "seconds"):
        into[k] = into.get(k, 0) + s.get(k, 0)
    into.setdefault("removed", Counter()).update(s["removed"])
    for reason, ex in s["examples"].items():
        have = into.setdefault("examples", {}).setdefault(reason, [])
        have.extend(ex[:EXAMPLES - len(have)])


def _kept_of_examples(cfg: PrepareConfig, examples: dict, sizes: list[int]) -> None:
    """Name the document each duplicate example was kept in place of (source, line and opening text)."""
    import numpy as np

    offsets = np.cumsum([0, *sizes])
    wanted: dict[int, dict[int, list[dict]]] = {}
    for ex in (x for exs in examples.values() for x in exs):
        shard = int(np.searchsorted(offsets, ex["duplicate_of"], side="right") - 1)
        wanted.setdefault(shard, {}).setdefault(ex["duplicate_of"] - int(offsets[shard]), []).append(ex)
    for shard, rows in wanted.items():
        with open(WorkFolder(cfg).filtered(shard), encoding="utf-8") as f:
            for row, line in enumerate(f):
                for ex in rows.get(row, []):
                    kept = json.loads(line)
                    ex["kept"] = {"source": kept["source"], "line": kept["line"], "text": kept["text"][:300]}
                if row >= max(rows):
                    break


def merge(cfg: PrepareConfig) -> dict:
    n = len(cfg.inputs)
    stages: dict[str, dict] = {name: {} for name in cfg.stages}
    malformed, examples, langs, lengths = 0, [], Counter(), [0] * (len(LENGTH_BINS) - 1)
    read_docs = read_bytes = 0
    folder = WorkFolder(cfg)
    for step in ("filter", "write"):
        for i in range(n):
            marker = folder.filtered(i, "stats.json") if step == "filter" else folder.written_marker(i)
            st = json.loads(marker.read_text())
            for name, s in st["stages"].items():
                _merge_stage(stages[name], s)
            langs.update(st.get("language_histogram", {}))
            if "dedup" in stages:
                stages["dedup"]["seconds"] = stages["dedup"].get("seconds", 0) + st.get("dedup_seconds", 0)
            if step == "filter":
                malformed += st["malformed"]["count"]
                examples += st["malformed"]["examples"][:20 - len(examples)]
                read_docs += st["read"]["docs"]
                read_bytes += st["read"]["bytes"]
            else:
                lengths = [x + y for x, y in zip(lengths, st["length_histogram"])]
    out_docs = sum(lengths)
    last = stages[cfg.stages[-1]] if cfg.stages else {"bytes_out": read_bytes}
    if "dedup" in stages and folder.dedup_marker.exists():
        info = json.loads(folder.dedup_marker.read_text())
        stages["dedup"]["seconds"] += info.get("seconds", 0)
        _kept_of_examples(cfg, stages["dedup"].get("examples", {}), info["shard_sizes"])
    for s in stages.values():
        s["removed"] = dict(sorted(s.get("removed", {}).items()))
        s["seconds"] = round(s.get("seconds", 0), 3)
    return {
        "settings": cfg.model_dump(),
        "input": {"files": n, "docs": read_docs, "bytes": read_bytes},
        "malformed": {"count": malformed, "examples": examples},
        "stages": stages,
        "output": {"docs": out_docs, "bytes": last.get("bytes_out", 0), "files": n},
        "language_histogram": dict(langs.most_common()),
        "length_histogram": {"bins": LENGTH_BINS[:-1], "counts": lengths},
        "dedup": {"shingle_words": cfg.shingle, "bands": cfg.bands, "rows": cfg.rows, "verify_jaccard": cfg.verify,
                  "candidate_probability": dedup.s_curve(cfg.bands, cfg.rows)} if "dedup" in cfg.stages else None,
    }


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plots(stats: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["<p>(install matplotlib for plots)</p>"]
    figs = []
    names = ["input", *stats["stages"]]
    docs = [stats["input"]["docs"], *(s.get("docs_out", 0) for s in stats["stages"].values())]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(names, docs, color="#4a7ab5")
    ax.set_title("documents after each stage")
    figs.append(_png(fig))
    reasons = {f"{st}: {r}": n for st, s in stats["stages"].items() for r, n in s["removed"].items()}
    if reasons:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(reasons) + 1))
        ax.barh(list(reasons), list(reasons.values()), color="#c0504d")
        ax.set_title("documents removed, by reason")
        figs.append(_png(fig))
    if stats["language_histogram"]:
        top = dict(list(stats["language_histogram"].items())[:15])
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(list(top), list(top.values()), color="#9bbb59")
        ax.set_title("detected language (documents reaching the language filter)")
        figs.append(_png(fig))
    lh = stats["length_histogram"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([f"≥{b}" for b in lh["bins"]], lh["counts"], color="#8064a2")
    ax.set_title("output document length (characters)")
    ax.tick_params(axis="x", rotation=45)
    figs.append(_png(fig))
    return figs


def write(cfg: PrepareConfig) -> dict:
    stats = merge(cfg)
    folder = WorkFolder(cfg)
    atomic_write(folder.stats_file, json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(n)}</td><td>{s.get('docs_in', 0):,}</td><td>{s.get('docs_out', 0):,}</td>"
        f"<td>{s.get('bytes_in', 0):,}</td><td>{s.get('bytes_out', 0):,}</td><td>{s['seconds']:.1f}</td>"
        f"<td>{e(', '.join(f'{r}: {c:,}' for r, c in s['removed'].items()))}</td></tr>"
        for n, s in stats["stages"].items())
    examples = "".join(
        f"<details><summary>{e(n)} — {e(r)} ({len(ex)} examples)</summary>"
        + "".join(f"<pre>{e(x['source'])}:{x['line']}"
                  + (f" (est. Jaccard {x['estimated_jaccard']} with the kept {e(x['kept']['source'])}:"
                     f"{x['kept']['line']})" if "kept" in x else "") + f"\n{e(x['text'])}"
                  + (f"\n--- kept:\n{e(x['kept']['text'])}" if "kept" in x else "") + "</pre>" for x in ex)
        + "</details>"
        for n, s in stats["stages"].items() for r, ex in s.get("examples", {}).items())
    curve = ""
    if stats["dedup"]:
        d = stats["dedup"]
        curve = (f"<h2>Near-duplicate LSH</h2><p>word {d['shingle_words']}-gram shingles, {d['bands']} bands × "
                 f"{d['rows']} rows, candidates confirmed at estimated Jaccard ≥ {d['verify_jaccard']}</p><table>"
                 "<tr><th>Jaccard</th><th>P(candidate)</th></tr>"
                 + "".join(f"<tr><td>{j}</td><td>{p:.4f}</td></tr>" for j, p in d["candidate_probability"].items())
                 + "</table>")
    malformed = "".join(f"<li>{e(m)}</li>" for m in stats["malformed"]["examples"])
    page = f"""<!doctype html><meta charset="utf-8"><title>glotta data prepare — {e(cfg.output)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}td,th{{padding:2px 8px;text-align:right}}
pre{{white-space:pre-wrap;background:#f4f4f4;padding:6px}}</style>
<h1>Data preparation report</h1>
<p>{stats['input']['files']} input files, {stats['input']['docs']:,} documents ({stats['input']['bytes']:,} bytes) →
{stats['output']['docs']:,} documents ({stats['output']['bytes']:,} bytes); language {e(cfg.lang)};
stages {e(' → '.join(cfg.stages))}; {stats['malformed']['count']:,} malformed records.</p>
<table><tr><th>stage</th><th>docs in</th><th>docs out</th><th>bytes in</th><th>bytes out</th><th>CPU s</th>
<th>removed</th></tr>
{rows}</table>
{''.join(_plots(stats))}
{curve}
<h2>Removed documents</h2>{examples}
<h2>Malformed records</h2><ul>{malformed}</ul>"""
    atomic_write(folder.report_file, page)
    return stats
