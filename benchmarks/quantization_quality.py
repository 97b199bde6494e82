"""What the CPU engine's precisions cost in quality, on real text: fp32, INT8 and INT4 graphs of one model.

    python benchmarks/quantization_quality.py [--model model_repository/glotta-fr-tiny]
                                              [--corpus ../shared/corpus/fr.jsonl.gz] [--docs 60] [--tokens 256]

Teacher-forced on the first `--tokens` tokens of the last `--docs` documents of the corpus: the share of positions
where each precision picks fp32's next token, and each precision's perplexity on those tokens.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from glotta.core.tokenizer import Tokenizer
from glotta.modeling.engine_graph import PRECISIONS, engine_graph
from glotta.server.engine.decoder_session import DecoderSession

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "model_repository" / "glotta-fr-tiny")
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "fr.jsonl.gz")
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=256)
    a = ap.parse_args()
    tok = Tokenizer(a.model / "tokenizer.json")
    with gzip.open(a.corpus, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f][-a.docs:]
    sessions = {p: DecoderSession(engine_graph(a.model, p), 2, max_rows=1, max_len=a.tokens) for p in PRECISIONS}
    agree, nll, positions, predicted = dict.fromkeys(PRECISIONS, 0), dict.fromkeys(PRECISIONS, 0.0), 0, 0
    for text in texts:
        ids = tok.encode(text)[: a.tokens]
        if len(ids) < 2:
            continue
        logits = {p: s.prefill([ids], 0, all_logits=[True])[0][0] for p, s in sessions.items()}
        choice = logits["fp32"].argmax(-1)
        for p, lg in logits.items():
            agree[p] += int((lg.argmax(-1) == choice).sum())
            shifted = lg - lg.max(-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            nll[p] += float(-logp[np.arange(len(ids) - 1), ids[1:]].sum())
        positions, predicted = positions + len(ids), predicted + len(ids) - 1
    print(f"{a.model.name}, {positions:,} positions of the last {len(texts)} documents of {a.corpus.name}")
    print("| precision | next token = fp32's | perplexity |\n|---|---|---|")
    for p in PRECISIONS:
        print(f"| {p} | {agree[p] / positions:.3f} | {np.exp(nll[p] / predicted):.2f} |")


if __name__ == "__main__":
    main()
