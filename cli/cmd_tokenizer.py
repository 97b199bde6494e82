"""`glotta tokenizer train`: a byte-level BPE tokenizer for your language, with its fertility report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from .common import console, handles_errors, subcommands


@handles_errors()
def _train(a: argparse.Namespace) -> int:
    from glotta.training.tokenizer_training import train

    r = train(a.input, a.vocab_size, Path(a.output), a.json_key, a.max_chars, a.heldout_fraction, a.baseline)
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


def register(sub) -> None:
    t = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your language")
    tr = subcommands(t).add_parser("train", help="train on JSONL documents and report fertility")
    tr.add_argument("--input", action="append", required=True, help="JSONL(.gz) files or globs (repeatable)")
    tr.add_argument("--vocab-size", type=int, default=50257, help="tokens, <|endoftext|> included")
    tr.add_argument("--output", required=True, help="folder for tokenizer.json, vocab.json, merges.txt")
    tr.add_argument("--json-key", default="text", help="JSON key of the text")
    tr.add_argument("--max-chars", type=int, default=200_000_000, help="characters sampled for training")
    tr.add_argument("--heldout-fraction", type=float, default=0.01, help="documents held out for the report")
    tr.add_argument("--baseline", help="tokenizer to compare fertility with (tokenizer.json or vocab+merges folder)")
    tr.set_defaults(func=_train)
