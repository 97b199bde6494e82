"""Hugging Face folders served by Glotta's engine against HF `generate` on the same weights, in one run.

A Llama-architecture model (RoPE, SwiGLU, RMSNorm, 8 query / 2 KV heads, untied head) and a GPT-2 of the demo
models' size are built with random weights, saved as Hugging Face folders, converted by `glotta serve`'s importer,
and decoded greedily: tokens/s at batch 1 and 8, each side in its own process (their thread pools would otherwise
compete), medians of interleaved repeats.

    python benchmarks/hf_models.py [--new-tokens 64] [--repeats 3]

Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "model_repository" / "glotta-fr-tiny" / "tokenizer.json"
PROMPT = "Debian est une distribution Linux"
BATCHES = (1, 8)


def build(kind: str, out: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                          num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=8192, n_positions=512, n_embd=256, n_layer=4, n_head=8, bos_token_id=0,
                         eos_token_id=0)
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(TOKENIZER, out / "tokenizer.json")
    return out


def peer_hf(folder: Path, n: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from glotta.core.tokenizer import Tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = Tokenizer(folder / "tokenizer.json").encode(PROMPT)
    cfg = model.generation_config
    cfg.eos_token_id, cfg.pad_token_id, cfg.do_sample, cfg.max_new_tokens = [], 0, False, n

    def run(batch: int) -> float:
        x = torch.tensor([ids] * batch)
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(x, attention_mask=torch.ones_like(x), generation_config=cfg)
        return batch * n / (time.perf_counter() - t)

    run(1)
    return {f"b{b}": statistics.median(run(b) for _ in range(3)) for b in BATCHES}


def peer_glotta(folder: Path, n: int) -> dict:
    from glotta.modeling.hf_folder import cached_hf_model
    from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions
    from glotta.server.engine.onnx_engine import OnnxEngine

    engine = OnnxEngine(cached_hf_model(folder))

    async def run(batch: int) -> float:
        await engine.start()
        req = GenerationRequest(PROMPT, n, SamplingParams(top_k=1), StopConditions(stop_on_eod=False), stream=False)

        async def one() -> int:
            return sum([len(c.token_ids) async for c in engine.generate(req)])

        t = time.perf_counter()
        count = sum(await asyncio.gather(*(one() for _ in range(batch))))
        dt = time.perf_counter() - t
        await engine.stop()
        return count / dt

    asyncio.run(run(1))
    return {f"b{b}": statistics.median(asyncio.run(run(b)) for _ in range(3)) for b in BATCHES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer", choices=["hf", "glotta"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        print(json.dumps((peer_hf if a.peer == "hf" else peer_glotta)(a.folder, a.new_tokens)))
        return
    console = Console(width=140)
    work = Path(tempfile.mkdtemp(prefix="glotta-hf-bench-"))
    env = {**os.environ, "GLOTTA_CACHE": str(work / "cache")}
    runs: dict[str, list[float]] = {}
    with console.status("building and measuring") as status:
        for kind in ("llama", "gpt2"):
            folder = build(kind, work / kind)
            for r in range(a.repeats):
                for peer in ("hf", "glotta"):
                    status.update(f"{kind}: {peer}, repeat {r + 1}/{a.repeats}")
                    out = subprocess.run([sys.executable, __file__, "--peer", peer, "--folder", str(folder),
                                          "--new-tokens", str(a.new_tokens)], capture_output=True, text=True,
                                         check=True, env=env).stdout
                    for k, v in json.loads(out.strip().splitlines()[-1]).items():
                        runs.setdefault(f"{kind} {peer} {k}", []).append(v)
    t = Table(title=f"greedy, {a.new_tokens} new tokens, {os.cpu_count()} cores, tokens/s (median of {a.repeats})")
    for col in ("model", "batch", "HF generate", "Glotta engine", "Glotta / HF"):
        t.add_column(col, justify="right")
    for kind in ("llama", "gpt2"):
        for b in BATCHES:
            hf, gl = (statistics.median(runs[f"{kind} {p} b{b}"]) for p in ("hf", "glotta"))
            t.add_row(kind, str(b), f"{hf:.0f}", f"{gl:.0f}", f"{gl / hf:.2f}×")
    console.print(t)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
