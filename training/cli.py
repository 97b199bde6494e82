"""`glotta tokenizer train` and `glotta data convert|merge|inspect`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _tokenizer(a: argparse.Namespace) -> int:
    from .tokenizer import train

    try:
        r = train(a.input, a.vocab_size, Path(a.output), a.json_key, a.max_chars, a.heldout_fraction, a.baseline)
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    t = Table(title=f"fertility on {r['heldout_documents']} held-out documents (lower is better)")
    for col in ("tokenizer", "tokens/word", "tokens/char", "chars/token"):
        t.add_column(col, justify="right")
    rows = [("trained", r["trained"])] + ([(r["baseline"]["path"], r["baseline"])] if "baseline" in r else [])
    for name, f in rows:
        t.add_row(name, f"{f['tokens_per_word']:.3f}", f"{f['tokens_per_char']:.4f}", f"{f['chars_per_token']:.2f}")
    console.print(t)
    if "baseline" in r:
        console.print(f"the baseline needs {r['baseline']['tokens'] / r['trained']['tokens']:.2f}× the tokens")
    console.print(f"wrote {a.output}/tokenizer.json, vocab.json, merges.txt, fertility.json "
                  f"({r['documents']:,} documents, {r['characters']:,} characters sampled)")
    return 0


def _data(a: argparse.Namespace) -> int:
    from .convert import convert
    from .megatron_dataset import DatasetError, MegatronDataset, merge

    try:
        if a.action == "convert":
            r = convert(a.input, a.output_prefix, a.vocab_file, a.merge_file, a.tokenizer_json, tuple(a.json_keys),
                        a.append_eod, a.workers)
            for path, line, reason in r.bad_lines[:50]:
                err.print(f"[yellow]skipped[/] {path}:{line}: {reason}")
            if len(r.bad_lines) > 50:
                err.print(f"[yellow]… and {len(r.bad_lines) - 50} more skipped lines[/]")
            console.print(f"{r.documents:,} documents, {r.tokens:,} tokens → {', '.join(r.outputs)} (.bin/.idx); "
                          f"{len(r.bad_lines)} malformed lines skipped")
        elif a.action == "merge":
            merge(a.inputs, a.output_prefix)
            console.print(f"merged {len(a.inputs)} datasets into {a.output_prefix}")
        else:
            ds = MegatronDataset(a.prefix)
            console.print(f"{a.prefix}: {len(ds):,} documents, {ds.num_tokens:,} tokens, dtype {ds.dtype}")
            if a.doc is not None:
                if not 0 <= a.doc < len(ds):
                    raise IndexError(f"document {a.doc} out of range (0..{len(ds) - 1})")
                ids = ds[a.doc].tolist()
                console.print(f"document {a.doc}: {len(ids)} tokens")
                if a.tokenizer:
                    from .tokenizer import load_any

                    console.print(load_any(a.tokenizer).decode(ids, skip_special_tokens=False), markup=False)
                else:
                    console.print(ids)
    except (OSError, ValueError, IndexError, DatasetError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    return 0


def add_parsers(sub) -> None:
    t = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your language")
    t.add_argument("action", choices=["train"])
    t.add_argument("--input", action="append", required=True, help="JSONL(.gz) files or globs (repeatable)")
    t.add_argument("--vocab-size", type=int, default=50257)
    t.add_argument("--output", required=True)
    t.add_argument("--json-key", default="text")
    t.add_argument("--max-chars", type=int, default=200_000_000, help="characters sampled for training")
    t.add_argument("--heldout-fraction", type=float, default=0.01)
    t.add_argument("--baseline", help="tokenizer to compare fertility with (tokenizer.json or vocab+merges folder)")
    t.set_defaults(func=_tokenizer)

    d = sub.add_parser("data", help="Megatron datasets: convert JSONL, merge shards, inspect")
    d.add_argument("action", choices=["convert", "merge", "inspect"])
    d.add_argument("prefix", nargs="?", help="inspect: dataset prefix (without .bin/.idx)")
    d.add_argument("--input", action="append", help="convert: JSONL(.gz) files or globs (repeatable)")
    d.add_argument("--inputs", nargs="+", help="merge: dataset prefixes")
    d.add_argument("--output-prefix")
    d.add_argument("--vocab-file")
    d.add_argument("--merge-file")
    d.add_argument("--tokenizer-json", help="instead of --vocab-file/--merge-file")
    d.add_argument("--json-keys", nargs="+", default=["text"])
    d.add_argument("--append-eod", action="store_true")
    d.add_argument("--workers", type=int, default=None, help="tokenizing processes (default: all cores)")
    d.add_argument("--doc", type=int, help="inspect: print document N")
    d.add_argument("--tokenizer", help="inspect: decode with this tokenizer")
    d.set_defaults(func=_checked)


def _checked(a: argparse.Namespace) -> int:
    need = {"convert": ("input", "output_prefix"), "merge": ("inputs", "output_prefix"), "inspect": ("prefix",)}
    missing = [n for n in need[a.action] if not getattr(a, n)]
    if missing:
        err.print(f"[red]error:[/] `glotta data {a.action}` needs --{missing[0].replace('_', '-')}")
        return 2
    return _data(a)

