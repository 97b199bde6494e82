"""`glotta data prepare` and one subcommand per stage (`glotta data clean|lang|blacklist|quality|dedup`)."""

from __future__ import annotations

import argparse
import os
import time

from rich.console import Console

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
STAGE_ACTIONS = ("clean", "lang", "blacklist", "quality", "dedup")


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--output", help="prepare: output folder (JSONL shards, stats.json, report.html)")
    d.add_argument("--lang", help="prepare: the language to keep (fr, es, ...)")
    d.add_argument("--stages", help="prepare: comma-separated order, default clean,lang,blacklist,dedup "
                   "(add quality for the Gopher rules)")
    d.add_argument("--text-key", help="prepare: JSON key of the text (default: text, else content)")
    d.add_argument("--min-chars", type=int, default=256)
    d.add_argument("--lang-threshold", type=float, default=0.65)
    d.add_argument("--blacklist", help="term file (default: the shipped list for --lang)")
    d.add_argument("--blacklist-threshold", type=int, default=2, help="distinct terms that remove a document")
    d.add_argument("--shingle", type=int, default=3, help="dedup: words per shingle")
    d.add_argument("--bands", type=int, default=32, help="dedup: LSH bands")
    d.add_argument("--rows", type=int, default=4, help="dedup: MinHash rows per band")
    d.add_argument("--verify", type=float, default=0.5, help="dedup: estimated Jaccard confirming a candidate")
    d.add_argument("--executor", choices=["local", "ray", "slurm"], default="local")
    d.add_argument("--partition", help="slurm partition")
    d.add_argument("--step", choices=["a", "dedup", "b", "report"], help="step: which step (Slurm jobs call it)")
    d.add_argument("--config", help="step: the run's .work/config.json")
    d.add_argument("--shard", type=int, help="step: input file index")


def _config(a: argparse.Namespace):
    from .pipeline import DEFAULT_STAGES, STAGES, PrepareConfig
    from .records import expand

    stages = [a.action] if a.action in STAGE_ACTIONS else (a.stages.split(",") if a.stages else DEFAULT_STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or len(set(stages)) != len(stages):
        raise ValueError(f"--stages: unknown or repeated stage in {stages} (choose from {', '.join(STAGES)})")
    if any(s in stages for s in ("lang", "blacklist", "quality")) and not a.lang:
        raise ValueError("--lang is required for the language, blacklist and quality stages")
    files = [str(p) for p in expand(a.input)]
    return PrepareConfig(inputs=files, output=a.output, lang=a.lang or "", stages=stages, text_key=a.text_key,
                         min_chars=a.min_chars, lang_threshold=a.lang_threshold, blacklist=a.blacklist,
                         blacklist_threshold=a.blacklist_threshold, shingle=a.shingle, bands=a.bands, rows=a.rows,
                         verify=a.verify)


def prepare(a: argparse.Namespace) -> int:
    from . import dedup, report
    from .executors import run_all, slurm_scripts, submit_slurm
    from .pipeline import prepare_dirs

    if not (a.input and a.output):
        err.print(f"[red]error:[/] `glotta data {a.action}` needs --input and --output")
        return 2
    try:
        cfg = _config(a)
        if a.blacklist:
            from .filters import load_terms

            load_terms(a.blacklist, cfg.lang)
        if cfg.bands < 1 or cfg.rows < 1:
            raise ValueError("--bands and --rows must be positive")
        prepare_dirs(cfg)
    except (ValueError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    workers = a.workers or os.cpu_count() or 1
    if "dedup" in cfg.stages:
        curve = ", ".join(f"J={j}: {p:.3f}" for j, p in dedup.s_curve(cfg.bands, cfg.rows, (0.6, 0.7, 0.8, 0.9)).items())
        console.print(f"MinHash LSH: word {cfg.shingle}-grams, {cfg.bands} bands × {cfg.rows} rows = "
                      f"{cfg.bands * cfg.rows} permutations; P(candidate) {curve}; candidates confirmed at "
                      f"estimated Jaccard ≥ {cfg.verify}")
    if a.executor == "slurm":
        return submit_slurm(slurm_scripts(cfg, workers, a.partition))
    start = time.perf_counter()
    run_all(cfg, a.executor, workers)
    stats = report.write(cfg)
    took = time.perf_counter() - start
    _summary(stats, took)
    return 0


def _summary(stats: dict, took: float) -> None:
    i, o = stats["input"], stats["output"]
    console.print(f"{i['docs']:,} documents in {i['files']} files → {o['docs']:,} kept "
                  f"({o['bytes'] / max(i['bytes'], 1):.1%} of the bytes) in {took:.1f} s")
    for name, s in stats["stages"].items():
        removed = ", ".join(f"{r} {n:,}" for r, n in s["removed"].items()) or "nothing"
        console.print(f"  {name}: {s.get('docs_in', 0):,} → {s.get('docs_out', 0):,} ({removed})")
    m = stats["malformed"]
    if m["count"]:
        console.print(f"[yellow]{m['count']:,} malformed records skipped[/], e.g.:")
        for line in m["examples"][:10]:
            console.print(f"  {line}")


def step(a: argparse.Namespace) -> int:
    """One step of a run whose settings are in .work/config.json (what the Slurm jobs execute)."""
    from pathlib import Path

    from . import report
    from .executors import STEPS
    from .pipeline import PrepareConfig, global_dedup

    cfg = PrepareConfig.model_validate_json(Path(a.config).read_text())
    if a.step in ("a", "b"):
        if a.shard is None:
            err.print("[red]error:[/] --shard is required for steps a and b")
            return 2
        print(STEPS[a.step](cfg, a.shard))
    elif a.step == "dedup":
        print(global_dedup(cfg))
    else:
        report.write(cfg)
    return 0
