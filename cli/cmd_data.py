"""`glotta data ...`: corpus preparation (`prepare`, or one stage alone) and Megatron datasets (`convert`, `merge`,
`inspect`)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .common import console, err, fail, handles_errors, subcommands

STAGE_ACTIONS = {"clean": "Unicode clean-up and minimum length", "lang": "keep one language (fastText, offline)",
                 "blacklist": "remove documents with blacklisted terms", "quality": "Gopher quality rules",
                 "dedup": "exact and MinHash-LSH near-duplicate removal"}
# PrepareConfig field → option type; help and defaults come from the configuration itself
PREPARE_OPTIONS = {"lang": str, "text_key": str, "min_chars": int, "lang_threshold": float, "blacklist": str,
                   "blacklist_threshold": int, "shingle": int, "bands": int, "rows": int, "verify": float}


def _config(a: argparse.Namespace):
    from glotta.training.data.config import PrepareConfig
    from glotta.training.data.records import expand

    fields = {k: getattr(a, k) for k in PREPARE_OPTIONS if getattr(a, k) is not None}
    if a.action in STAGE_ACTIONS:
        fields["stages"] = [a.action]
    elif a.stages:
        fields["stages"] = a.stages.split(",")
    return PrepareConfig(inputs=[str(p) for p in expand(a.input)], output=a.output, **fields)


def _prepare(a: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from glotta.training.data import dedup
    from glotta.training.data.executors import run_all, slurm_scripts, submit_slurm
    from glotta.training.data.steps import write_report
    from glotta.training.data.workfolder import WorkFolder

    try:
        cfg = _config(a)
        if cfg.blacklist:
            from glotta.training.data.blocks.blacklist import load_terms

            load_terms(cfg.blacklist, cfg.lang)
        WorkFolder(cfg).create()
    except ValidationError as e:
        return fail(e.errors()[0]["msg"].removeprefix("Value error, "))
    except (ValueError, OSError) as e:
        return fail(e)
    workers = a.workers or os.cpu_count() or 1
    if cfg.dedups:
        curve = ", ".join(f"J={j}: {p:.3f}" for j, p in dedup.s_curve(cfg.bands, cfg.rows, (0.6, 0.7, 0.8, 0.9)).items())
        console.print(f"MinHash LSH: word {cfg.shingle}-grams, {cfg.bands} bands × {cfg.rows} rows = "
                      f"{cfg.bands * cfg.rows} permutations; P(candidate) {curve}; candidates confirmed at "
                      f"estimated Jaccard ≥ {cfg.verify}")
    if a.executor == "slurm":
        return submit_slurm(slurm_scripts(cfg, workers, a.partition))
    start = time.perf_counter()
    run_all(cfg, a.executor, workers)
    stats = write_report(cfg)
    _summary(stats, time.perf_counter() - start)
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
            console.print(f"  {line}", markup=False)


@handles_errors()
def _step(a: argparse.Namespace) -> int:
    """One step of a run whose settings are in .work/config.json (what the Slurm jobs execute)."""
    from glotta.training.data.config import PrepareConfig
    from glotta.training.data.steps import SHARD_STEPS, find_duplicates, write_report

    cfg = PrepareConfig.model_validate_json(Path(a.config).read_text())
    if a.step in SHARD_STEPS:
        if a.shard is None:
            return fail(f"--shard is required for step {a.step}")
        print(SHARD_STEPS[a.step](cfg, a.shard))
    elif a.step == "dedup":
        print(find_duplicates(cfg))
    else:
        write_report(cfg)
    return 0


@handles_errors()
def _convert(a: argparse.Namespace) -> int:
    from glotta.training.convert import convert

    r = convert(a.input, a.output_prefix, a.vocab_file, a.merge_file, a.tokenizer_json, tuple(a.json_keys),
                a.append_eod, a.workers)
    for path, line, reason in r.bad_lines[:50]:
        err.print(f"[yellow]skipped[/] {path}:{line}: {reason}", markup=True, highlight=False)
    if len(r.bad_lines) > 50:
        err.print(f"[yellow]… and {len(r.bad_lines) - 50} more skipped lines[/]")
    console.print(f"{r.documents:,} documents, {r.tokens:,} tokens → {', '.join(r.outputs)} (.bin/.idx); "
                  f"{len(r.bad_lines)} malformed lines skipped")
    return 0


@handles_errors()
def _merge(a: argparse.Namespace) -> int:
    from glotta.core.megatron.indexed import merge

    merge(a.inputs, a.output_prefix)
    console.print(f"merged {len(a.inputs)} datasets into {a.output_prefix}")
    return 0


@handles_errors(IndexError)
def _inspect(a: argparse.Namespace) -> int:
    from glotta.core.megatron.indexed import MegatronDataset

    ds = MegatronDataset(a.prefix)
    console.print(f"{a.prefix}: {len(ds):,} documents, {ds.num_tokens:,} tokens, dtype {ds.dtype}")
    if a.doc is not None:
        if not 0 <= a.doc < len(ds):
            raise IndexError(f"document {a.doc} out of range (0..{len(ds) - 1})")
        ids = ds[a.doc].tolist()
        console.print(f"document {a.doc}: {len(ids)} tokens")
        if a.tokenizer:
            from glotta.training.tokenizer_training import load_any

            console.print(load_any(a.tokenizer).decode(ids, skip_special_tokens=False), markup=False)
        else:
            console.print(ids)
    return 0


def _prepare_options(p: argparse.ArgumentParser, stages: bool) -> None:
    from glotta.training.data.config import default, describe

    p.add_argument("--input", action="append", required=True, help="input files or globs (repeatable): OSCAR .txt, "
                   "OSCAR 21+ / mC4 JSONL, plain or .gz")
    p.add_argument("--output", required=True, help=describe("output"))
    if stages:
        p.add_argument("--stages", help=f"comma-separated order (default {','.join(default('stages'))}; add quality "
                       "for the Gopher rules)")
    for field, kind in PREPARE_OPTIONS.items():
        d = default(field)
        p.add_argument(f"--{field.replace('_', '-')}", type=kind,
                       help=describe(field) + (f" (default {d})" if d not in (None, "") else ""))
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                   help="local process pool, Ray tasks ($RAY_ADDRESS joins a cluster), or Slurm job arrays")
    p.add_argument("--partition", help="slurm partition")
    p.set_defaults(func=_prepare)


def register(sub) -> None:
    d = sub.add_parser("data", help="corpus preparation (prepare, or one stage alone) and Megatron datasets "
                       "(convert JSONL, merge shards, inspect)")
    actions = subcommands(d)
    _prepare_options(actions.add_parser("prepare", help="clean → language → blacklist → dedup, with a report"), True)
    for name, help in STAGE_ACTIONS.items():
        _prepare_options(actions.add_parser(name, help=f"{help} (the prepare run with this stage alone)"), False)
    s = actions.add_parser("step", help="one step of a prepare run (what the Slurm jobs execute)")
    s.add_argument("--step", required=True, choices=["filter", "dedup", "write", "report"], help="which step")
    s.add_argument("--config", required=True, help="the run's .work/config.json")
    s.add_argument("--shard", type=int, help="input file index (filter and write steps)")
    s.set_defaults(func=_step)
    c = actions.add_parser("convert", help="JSONL → Megatron .bin/.idx (as Megatron's preprocess_data.py)")
    c.add_argument("--input", action="append", required=True, help="JSONL(.gz) files or globs (repeatable)")
    c.add_argument("--output-prefix", "--output", dest="output_prefix", required=True,
                   help="writes PREFIX_{key}_document.bin/.idx")
    c.add_argument("--vocab-file", help="GPT-2 vocab.json")
    c.add_argument("--merge-file", help="GPT-2 merges.txt")
    c.add_argument("--tokenizer-json", help="instead of --vocab-file/--merge-file")
    c.add_argument("--json-keys", nargs="+", default=["text"], help="JSON keys to convert")
    c.add_argument("--append-eod", action="store_true", help="end every document with <|endoftext|>")
    c.add_argument("--workers", type=int, help="processes (default: all cores)")
    c.set_defaults(func=_convert)
    m = actions.add_parser("merge", help="concatenate datasets (as Megatron's merge_datasets.py)")
    m.add_argument("--inputs", nargs="+", required=True, help="dataset prefixes")
    m.add_argument("--output-prefix", "--output", dest="output_prefix", required=True,
                   help="the merged dataset's prefix")
    m.set_defaults(func=_merge)
    i = actions.add_parser("inspect", help="documents and tokens of a dataset, or one document")
    i.add_argument("prefix", help="dataset prefix (without .bin/.idx)")
    i.add_argument("--doc", type=int, help="print document N")
    i.add_argument("--tokenizer", help="decode with this tokenizer")
    i.set_defaults(func=_inspect)
