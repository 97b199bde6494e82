"""One constrained row among free ones: does a structured output slow down the batch it shares?

    python benchmarks/constrained_batch.py [--rows 16] [--tokens 64] [--repeats 5]

The embedded engine on the demo model runs `rows` greedy rows of `tokens` tokens each (end of text ignored), all
free, then the same with one row under a JSON schema whose string field keeps it generating; alternately, medians of
tokens/s over the repeats, and their ratio. Then the mask's own cost per token: computing the allowed tokens, applying
them to a row of logits and consuming the chosen token (engine/constraints.py), along a valid answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console()
SCHEMA = {"type": "object", "properties": {"titre": {"type": "string", "minLength": 400, "maxLength": 2000}},
          "required": ["titre"], "additionalProperties": False}
PROMPTS = ["Il était une fois", "Le noyau Linux", "Pour installer un paquet", "La gestion des utilisateurs"]


async def batch(engine, rows: int, tokens: int, constrained: int) -> float:
    from glotta.server.engine.constraints import Constraint
    from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions

    async def one(i: int) -> int:
        c = Constraint("json_schema", json.dumps(SCHEMA)) if i < constrained else None
        req = GenerationRequest(PROMPTS[i % len(PROMPTS)], tokens, SamplingParams(top_k=1),
                                StopConditions(stop_on_eod=False), stream=False, constraint=c)
        n = 0
        async for chunk in engine.generate(req):
            n += len(chunk.token_ids)
        return n

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(rows)))
    return sum(counts) / (time.perf_counter() - t0)


def mask_cost(engine) -> float:
    """Median µs per constrained token: mask, apply, consume, along a valid answer."""
    from glotta.server.engine.constraints import Constraint, grammars_for

    tok = engine.tokenizer
    answer = json.dumps({"titre": "Le noyau Linux gère la mémoire, les processus et les pilotes. " * 8},
                        ensure_ascii=False, separators=(", ", ": "))
    ids = tok.encode(answer)
    matcher = grammars_for(tok).matcher(Constraint("json_schema", json.dumps(SCHEMA)))
    logits = np.random.default_rng(0).standard_normal(tok.vocab_size).astype(np.float32)
    times = []
    for t in ids:
        s = time.perf_counter()
        masked = matcher.mask(logits)
        matcher.consume(t)
        times.append(time.perf_counter() - s)
        assert np.isfinite(masked[t])
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "model_repository" / "glotta-fr-tiny"))
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    from glotta.server.engine.onnx_engine import OnnxEngine

    engine = OnnxEngine(a.model)

    async def run() -> dict[str, list[float]]:
        await engine.start()
        out: dict[str, list[float]] = {"free": [], "one constrained": []}
        try:
            await batch(engine, a.rows, 8, 1)  # warm-up, and the grammar compiled once (cached)
            order = [("free", 0), ("one constrained", 1)]
            for r in range(a.repeats):
                for label, k in order if r % 2 == 0 else order[::-1]:
                    out[label].append(await batch(engine, a.rows, a.tokens, k))
        finally:
            await engine.stop()
        return out

    with console.status("measuring"):
        runs = asyncio.run(run())
        cost = mask_cost(engine)
    free, mixed = statistics.median(runs["free"]), statistics.median(runs["one constrained"])
    t = Table(title=f"{a.rows} greedy rows × {a.tokens} tokens, tokens/s, median of {a.repeats}")
    for col in ("all free", "1 constrained", "ratio", "mask cost per constrained token"):
        t.add_column(col, justify="right")
    t.add_row(f"{free:.0f}", f"{mixed:.0f}", f"{mixed / free:.2f}", f"{cost:.0f} µs")
    console.print(t)


if __name__ == "__main__":
    main()
