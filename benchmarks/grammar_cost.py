"""What a token mask costs on this CPU: llguidance against outlines-core, the two grammar libraries that need
neither torch nor a GPU (xgrammar's wheel requires torch, transformers and triton), on the same tokenizers, schema
and regex, in one run.

    python benchmarks/grammar_cost.py [--vocab 8192,50000] [--repeats 5]

For each library and tokenizer: the one-time cost (wrapping the tokenizer; compiling the grammar) and the
per-token cost of a constrained step (compute the mask of allowed tokens, apply it to the logits, consume the
chosen token) along a valid answer, medians in microseconds. The tokenizers are the shipped French one (8,192) and
byte-level BPEs trained here on the shared corpus (when ../shared is present) or on the repository's text. Put the
per-token figure beside the engine's step: `python benchmarks/serving_spine.py` prints tokens/s.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpus"
console = Console()
SCHEMA = {"type": "object", "properties": {
    "nom": {"type": "string", "maxLength": 40}, "âge": {"type": "integer", "minimum": 0, "maximum": 150},
    "ville": {"type": "string", "enum": ["Paris", "Lyon", "Madrid", "Barcelona"]},
    "langues": {"type": "array", "items": {"type": "string"}, "maxItems": 4}},
    "required": ["nom", "âge", "ville", "langues"], "additionalProperties": False}
ANSWER = json.dumps({"nom": "Amélie Poulain", "âge": 23, "ville": "Paris", "langues": ["français", "español"]},
                    ensure_ascii=False, separators=(", ", ": "))
NESTED = {"type": "object", "properties": {
    "commande": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{6}$"},
    "articles": {"type": "array", "minItems": 1, "maxItems": 8, "items": {"type": "object", "properties": {
        "désignation": {"type": "string", "maxLength": 80}, "quantité": {"type": "integer", "minimum": 1},
        "prix": {"type": "number"}}, "required": ["désignation", "quantité", "prix"], "additionalProperties": False}},
    "remarque": {"type": ["string", "null"], "maxLength": 200}},
    "required": ["commande", "articles", "remarque"], "additionalProperties": False}
NESTED_ANSWER = json.dumps({"commande": "FR-004211", "articles": [
    {"désignation": "Câble réseau Cat. 6, 2 m", "quantité": 3, "prix": 7.5},
    {"désignation": "Routeur Wi-Fi", "quantité": 1, "prix": 89.9}], "remarque": None},
    ensure_ascii=False, separators=(", ", ": "))
REGEX = r"(positif|négatif|neutre)( \(confiance: 0\.[0-9]{2}\))?"
REGEX_ANSWER = "négatif (confiance: 0.87)"


def tokenizer_json(vocab: int) -> str:
    """The shipped French tokenizer at 8,192; else a byte-level BPE of that size trained on the shared corpus."""
    if vocab == 8192:
        return (ROOT / "model_repository" / "glotta-fr-tiny" / "tokenizer.json").read_text()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def texts():
        for name in ("fr.jsonl.gz", "es.jsonl.gz"):
            if (SHARED / name).is_file():
                with gzip.open(SHARED / name, "rt", encoding="utf-8") as f:
                    for i, line in enumerate(f):
                        if i >= 20000:
                            break
                        yield json.loads(line).get("text", "")
        for path in (ROOT / "server" / "templates" / "builtin").glob("*.yaml"):
            yield path.read_text(encoding="utf-8")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts(), trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         show_progress=False))
    return tok.to_str()


def llguidance_run(tok_json: str, grammar: dict, answer: str) -> dict:
    import llguidance
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    lltok = llguidance.LLTokenizer(tok_json, eos_token=Tokenizer.from_str(tok_json).token_to_id("<|endoftext|>"))
    t1 = time.perf_counter()
    g = llguidance.LLMatcher.grammar_from_json_schema(grammar["schema"]) if "schema" in grammar else \
        llguidance.LLMatcher.grammar_from_regex(grammar["regex"])
    matcher = llguidance.LLMatcher(lltok, g)
    assert not matcher.is_error(), matcher.get_error()
    t2 = time.perf_counter()
    ids = Tokenizer.from_str(tok_json).encode(answer).ids
    vocab = lltok.vocab_size
    mask = allocate_token_bitmask(1, vocab)
    logits = np.random.default_rng(0).standard_normal((1, vocab)).astype(np.float32)
    per = []
    for t in ids:
        s = time.perf_counter()
        fill_next_token_bitmask(matcher, mask)
        allowed = np.unpackbits(mask.view(np.uint8), bitorder="little")[:vocab].astype(bool)
        row = np.where(allowed, logits[0], -np.inf)
        ok = matcher.consume_token(t)
        per.append(time.perf_counter() - s)
        assert ok and np.isfinite(row[t]), (t, matcher.get_error())
    return {"tokenizer_s": t1 - t0, "compile_s": t2 - t1, "per_token_us": statistics.median(per) * 1e6,
            "tokens": len(ids)}


def outlines_run(tok_json: str, grammar: dict, answer: str) -> dict:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema
    from tokenizers import Tokenizer

    from glotta.core.tokenizer import Tokenizer as GlottaTokenizer

    t0 = time.perf_counter()
    hf = Tokenizer.from_str(tok_json)
    eos = hf.token_to_id("<|endoftext|>")
    path = Path("/tmp/_grammar_cost_tokenizer.json")
    path.write_text(tok_json)
    pieces = GlottaTokenizer(path).token_bytes  # the bytes each token stands for (byte-level BPE)
    by_bytes: dict[bytes, list[int]] = {}
    for i, b in enumerate(pieces):
        if i != eos:
            by_bytes.setdefault(b, []).append(i)
    vocabulary = Vocabulary(eos, by_bytes)
    t1 = time.perf_counter()
    regex = build_regex_from_schema(json.dumps(grammar["schema"])) if "schema" in grammar else grammar["regex"]
    index = Index(regex, vocabulary)
    t2 = time.perf_counter()
    guide = Guide(index)
    ids = hf.encode(answer).ids
    vocab = hf.get_vocab_size()
    logits = np.random.default_rng(0).standard_normal(vocab).astype(np.float32)
    per = []
    for t in ids:
        s = time.perf_counter()
        allowed = np.fromiter(guide.get_tokens(), np.int64)
        row = np.full_like(logits, -np.inf)
        row[allowed] = logits[allowed]
        guide.advance(t)
        per.append(time.perf_counter() - s)
        assert np.isfinite(row[t]), t
    return {"tokenizer_s": t1 - t0, "compile_s": t2 - t1, "per_token_us": statistics.median(per) * 1e6,
            "tokens": len(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", default="8192,50000")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    table = Table(title="constrained decoding cost on this CPU (median of repeats)")
    for col in ("library", "vocab", "grammar", "wrap tokenizer (s)", "compile (s)", "per token (µs)"):
        table.add_column(col, justify="right")
    for vocab in (int(v) for v in a.vocab.split(",")):
        with console.status(f"tokenizer of {vocab}"):
            tok_json = tokenizer_json(vocab)
        for gname, grammar, answer in (("JSON schema", {"schema": SCHEMA}, ANSWER),
                                       ("nested schema", {"schema": NESTED}, NESTED_ANSWER),
                                       ("regex", {"regex": REGEX}, REGEX_ANSWER)):
            for lib, run in (("llguidance", llguidance_run), ("outlines-core", outlines_run)):
                with console.status(f"{lib}, {vocab}, {gname}"):
                    runs = [run(tok_json, grammar, answer) for _ in range(a.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                table.add_row(lib, str(vocab), gname, f"{med['tokenizer_s']:.3f}", f"{med['compile_s']:.3f}",
                              f"{med['per_token_us']:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
