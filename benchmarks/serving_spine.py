"""Serving-spine benchmark, in one run on a shipped model (HF runs in a child process, so that torch's OpenMP
threads, which spin after each call, do not steal the cores from the engine measured next):

1. tokens/s at batch 1 and 8 for Hugging Face `generate` vs the Glotta engine (ONNX Runtime fp32 and INT8),
   all greedy, same weights (the HF model is rebuilt from the ONNX engine's initializers);
2. aggregate tokens/s over HTTP (`/v1/completions`) for 1 vs 16 concurrent clients against a real `glotta serve`.

    python benchmarks/serving_spine.py [--model glotta-fr-tiny] [--new-tokens 128] [--repeats 5]

Figures are medians over interleaved repeats; ratios are taken within the same run. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = [
    "Il était une fois une tortue qui vivait dans ",
    "Pour installer un paquet, utilisez la commande",
    "Le noyau Linux",
    "Les fichiers de configuration se trouvent dans le répertoire",
    "Si le système ne démarre pas, vérifiez",
    "Debian est une distribution",
    "La gestion des utilisateurs",
    "Écran de démarrage",
]
console = Console()


def hf_tokens_per_s(model, tok, batch: int, n: int) -> float:
    import torch

    enc = [tok.encode(p) for p in (PROMPTS * 2)[:batch]]
    width = max(map(len, enc))
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, e in enumerate(enc):  # left padding, as generate expects for decoder-only models
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    cfg = model.generation_config
    cfg.eos_token_id, cfg.pad_token_id, cfg.do_sample, cfg.max_new_tokens = None, 0, False, n
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, generation_config=cfg)
    dt = time.perf_counter() - t
    assert out.shape[1] - width == n
    return batch * n / dt


def hf_figures(model_dir: Path, n: int) -> dict[str, float]:
    """HF `generate` at batch 1 and 8 on the engine's own weights (rebuilt from the ONNX initializers)."""
    import torch

    from glotta.core.tokenizer import Tokenizer
    from glotta.export.onnx_export import hf_from_onnx

    torch.set_num_threads(os.cpu_count() or 1)
    model = hf_from_onnx(model_dir)
    tok = Tokenizer(model_dir / "tokenizer.json")
    hf_tokens_per_s(model, tok, 1, 16)  # warm-up
    return {str(b): hf_tokens_per_s(model, tok, b, n) for b in (1, 8)}


def engine_tokens_per_s(engine, batch: int, n: int) -> float:
    from glotta.server.engine.protocol import GenerationRequest, SamplingParams, StopConditions

    async def run() -> float:
        await engine.start()

        async def one(p: str) -> int:
            count = 0
            req = GenerationRequest(p, n, SamplingParams(top_k=1), StopConditions(stop_on_eod=False))
            async for c in engine.generate(req):
                count += len(c.token_ids)
            return count

        t = time.perf_counter()
        counts = await asyncio.gather(*(one(p) for p in (PROMPTS * 2)[:batch]))
        dt = time.perf_counter() - t
        await engine.stop()
        assert sum(counts) == batch * n
        return batch * n / dt

    return asyncio.run(run())


async def http_aggregate(url: str, model: str, clients: int, requests_each: int, n: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as http:

        async def worker(w: int) -> int:
            total = 0
            for r in range(requests_each):
                body = {"model": model, "prompt": PROMPTS[(w + r) % len(PROMPTS)], "max_tokens": n,
                        "temperature": 0, "ignore_eos": True}
                resp = await http.post("/v1/completions", json=body)
                resp.raise_for_status()
                total += resp.json()["usage"]["completion_tokens"]
            return total

        t = time.perf_counter()
        tokens = sum(await asyncio.gather(*(worker(w) for w in range(clients))))
        return tokens / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glotta-fr-tiny")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    ap.add_argument("--port", type=int, default=5077)
    ap.add_argument("--output", type=Path, default=ROOT / "bench-results" / "serving_spine.json")
    ap.add_argument("--hf-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    from glotta.clients.local_gateway import LocalGateway
    from glotta.core.model_folder import resolve_model
    from glotta.server.engine.onnx_engine import OnnxEngine

    model_dir = resolve_model(a.model, ROOT / "model_repository")
    if a.hf_only:  # child process: torch's OpenMP threads stay out of the engine's process
        print(json.dumps(hf_figures(model_dir, a.new_tokens)))
        return
    fp32 = OnnxEngine(model_dir, threads=a.threads)
    int8 = OnnxEngine(model_dir, threads=a.threads, int8=True)
    n = a.new_tokens
    runs: dict[str, list[float]] = {}
    with console.status("in-process: HF generate vs engine") as status:
        for r in range(a.repeats):
            status.update(f"repeat {r + 1}/{a.repeats}: HF generate (in its own process)")
            hf = json.loads(subprocess.run(
                [sys.executable, __file__, "--hf-only", "--model", a.model, "--new-tokens", str(n)],
                check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            for batch in (1, 8):
                status.update(f"repeat {r + 1}/{a.repeats}: engine, batch {batch}")
                runs.setdefault(f"hf b{batch}", []).append(hf[str(batch)])
                runs.setdefault(f"fp32 b{batch}", []).append(engine_tokens_per_s(fp32, batch, n))
                runs.setdefault(f"int8 b{batch}", []).append(engine_tokens_per_s(int8, batch, n))

    http: dict[str, dict[str, list[float]]] = {}
    for precision, extra in (("fp32", []), ("int8", ["--int8"])):
        gateway = LocalGateway(["--model", a.model, "--log-level", "warning", *extra,
                                *(["--threads", str(a.threads)] if a.threads else [])], port=a.port)
        url = gateway.url
        try:
            asyncio.run(http_aggregate(url, a.model, 4, 1, 16))  # warm-up
            with console.status(f"HTTP {precision}: 1 vs 16 clients"):
                for _ in range(max(3, a.repeats // 2)):
                    http.setdefault(precision, {}).setdefault("1", []).append(
                        asyncio.run(http_aggregate(url, a.model, 1, 6, n)))
                    http[precision].setdefault("16", []).append(asyncio.run(http_aggregate(url, a.model, 16, 3, n)))
        finally:
            gateway.stop()

    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = lambda num, den: statistics.median(np.array(runs[num]) / np.array(runs[den]))  # noqa: E731
    t = Table(title=f"{a.model}: greedy, {n} new tokens, {os.cpu_count()} cores, median of {a.repeats}")
    for col in ("batch", "HF generate tok/s", "engine fp32 tok/s", "fp32 / HF", "engine INT8 tok/s", "INT8 / HF"):
        t.add_column(col, justify="right")
    for b in (1, 8):
        t.add_row(str(b), f"{med[f'hf b{b}']:.0f}", f"{med[f'fp32 b{b}']:.0f}", f"{ratio(f'fp32 b{b}', f'hf b{b}'):.1f}×",
                  f"{med[f'int8 b{b}']:.0f}", f"{ratio(f'int8 b{b}', f'hf b{b}'):.1f}×")
    console.print(t)
    t2 = Table(title="HTTP /v1/completions, aggregate output tokens/s (median)")
    for col in ("engine", "1 client", "16 clients", "16 / 1"):
        t2.add_column(col, justify="right")
    for precision, v in http.items():
        one, sixteen = statistics.median(v["1"]), statistics.median(v["16"])
        t2.add_row(precision, f"{one:.0f}", f"{sixteen:.0f}", f"{sixteen / one:.1f}×")
    console.print(t2)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({"in_process": runs, "http": http, "new_tokens": n}, indent=1))
    console.print(f"raw figures: {a.output}")


if __name__ == "__main__":
    main()
