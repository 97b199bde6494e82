"""`glotta data convert` vs the straightforward baseline, in one run:

- baseline = what `tools/preprocess_data.py` does in each worker: `json.loads`, Hugging Face `tokenizers` `encode` per
  document, EOD appended, megatron-core's `IndexedDatasetBuilder.add_item` + `end_document`, single process;
- Glotta with 1 and 2 worker processes (each single-threaded tokenizer);
- the outputs must be byte-identical, then tokens/s and the ratio per worker are printed;
- fertility (tokens per word / per character) of the fr and es tokenizers on held-out fr and es text, each against
  the other language's tokenizer as the mismatched baseline (GPT-2's own files cannot be downloaded here; pass any
  tokenizer with `glotta tokenizer train --baseline PATH`).

    python benchmarks/convert.py [--corpus ../shared/corpus] [--repeat 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def build_input(corpus: Path, repeat: int, out: Path) -> int:
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for _ in range(repeat):
            for lang in ("fr", "es"):
                with gzip.open(corpus / f"{lang}.jsonl.gz", "rt", encoding="utf-8") as src:
                    for line in src:
                        f.write(line)
                        n += 1
    return n


def baseline(src: Path, prefix: Path, vocab: Path, merges: Path) -> int:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from tokenizers.implementations import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(str(vocab), str(merges), add_prefix_space=False)
    eod = tok.token_to_id("<|endoftext|>")
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(tok.get_vocab_size()))
    tokens = 0
    with src.open(encoding="utf-8") as f:
        for line in f:
            ids = tok.encode(json.loads(line)["text"].replace("<|endoftext|>", "")).ids + [eod]
            builder.add_item(torch.IntTensor(ids))
            builder.end_document()
            tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--repeat", type=int, default=2, help="copies of fr + es in the input")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each set-up (median)")
    a = ap.parse_args()

    from glotta.training.convert import convert
    from glotta.training.tokenizer_training import fertility, iter_texts, load_any

    model = ROOT / "model_repository" / "glotta-fr-tiny"
    vocab, merges = model / "vocab.json", model / "merges.txt"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "input.jsonl"
        docs = build_input(a.corpus, a.repeat, src)
        times: dict[str, list[float]] = {"baseline": [], "glotta 1 worker": [], "glotta 2 workers": []}
        tokens = 0
        for r in range(a.repeats):
            t = time.perf_counter()
            tokens = baseline(src, tmp / "base", vocab, merges)
            times["baseline"].append(time.perf_counter() - t)
            for w in (1, 2):
                t = time.perf_counter()
                rep = convert([str(src)], str(tmp / f"g{w}"), str(vocab), str(merges), append_eod=True, workers=w,
                              progress=False)
                times[f"glotta {w} worker" + ("s" if w > 1 else "")].append(time.perf_counter() - t)
                assert rep.tokens == tokens
                for ext in ("bin", "idx"):
                    same = (tmp / f"base.{ext}").read_bytes() == (tmp / f"g{w}_text_document.{ext}").read_bytes()
                    assert same, f"{ext} differs from megatron-core's"
    t = Table(title=f"{docs:,} documents, {tokens:,} tokens (outputs byte-identical), median of {a.repeats}")
    for col in ("set-up", "seconds", "tokens/s", "per worker vs baseline"):
        t.add_column(col, justify="right")
    base = statistics.median(times["baseline"])
    for name, xs in times.items():
        workers = 2 if "2" in name else 1
        m = statistics.median(xs)
        t.add_row(name, f"{m:.2f}", f"{tokens / m:,.0f}", f"{base / m / workers:.2f}×")
    console.print(t)

    t2 = Table(title="fertility on held-out documents (tokens per word / per character; lower is better)")
    for col in ("text", "tokenizer", "tokens/word", "tokens/char"):
        t2.add_column(col, justify="right")
    for lang, other in (("fr", "es"), ("es", "fr")):
        texts = [x for i, x in enumerate(iter_texts([str(a.corpus / f"{lang}.jsonl.gz")])) if i % 50 == 0]
        for name in (lang, other):
            f = fertility(load_any(ROOT / "model_repository" / f"glotta-{name}-tiny"), texts)
            t2.add_row(lang, f"glotta-{name}-tiny", f"{f['tokens_per_word']:.3f}", f"{f['tokens_per_char']:.4f}")
    console.print(t2)


if __name__ == "__main__":
    main()
