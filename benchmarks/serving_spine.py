"""Serving-spine benchmark: Glotta's CPU engine against CTranslate2 and Hugging Face `generate`, in one run, on the
same weights (the HF model is rebuilt from the shipped ONNX's initializers; CTranslate2 converts that HF model).

    python benchmarks/serving_spine.py [--model glotta-fr-tiny] [--new-tokens 64] [--repeats 3]

Measured, all greedy with `--new-tokens` tokens per prompt:
1. in-process tokens/s at batch 1 and 16: HF, CTranslate2 float32 / int8, Glotta fp32 / INT8;
2. over HTTP (`/v1/completions` on a real `glotta serve`): 1 and 16 concurrent clients, fp32 and `--precision int8`;
3. time to first token of a 256-token prompt over HTTP (streaming), p50 / p95;
4. the share of the arithmetic limit: FLOPs per token × tokens/s ÷ the fp32 matrix-multiply rate measured here;
5. at batch 1 / 1 client, the same with n-gram speculation (`--speculate 4`, off by default): same greedy tokens,
   fewer model passes where the text repeats — reported apart, since its gain depends on the text.

Each peer runs in its own child process (torch's and CTranslate2's OpenMP threads, and ONNX Runtime's spinning
threads, would otherwise steal the cores from whoever is measured next). Figures are medians over interleaved
repeats; only ratios within this run mean anything. Nothing here is a test.
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
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 16)
SPECULATE = 4
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
console = Console(width=200)


def batch_prompts(batch: int) -> list[str]:
    return (PROMPTS * (batch // len(PROMPTS) + 1))[:batch]


def warm_median(run, batch: int, times: int = 3) -> float:
    """tokens/s of `run(batch)`: one warm-up call at this batch size, then the median of `times` calls."""
    run(batch)
    return statistics.median(run(batch)[0] for _ in range(times))


# -- peers, each run as `serving_spine.py --peer NAME` in a child process ----------------------------------------------


def peer_hf(model_dir: Path, n: int) -> dict:
    import torch

    from glotta.core.tokenizer import Tokenizer
    from glotta.export.onnx_export import hf_from_onnx

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = hf_from_onnx(model_dir), Tokenizer(model_dir / "tokenizer.json")
    cfg = model.generation_config
    cfg.eos_token_id, cfg.pad_token_id, cfg.do_sample, cfg.max_new_tokens = None, 0, False, n

    def run(batch: int) -> tuple[float, list[int]]:
        enc = [tok.encode(p) for p in batch_prompts(batch)]
        width = max(map(len, enc))
        ids, mask = torch.zeros(batch, width, dtype=torch.long), torch.zeros(batch, width, dtype=torch.long)
        for i, e in enumerate(enc):  # left padding, as generate expects for decoder-only models
            ids[i, width - len(e):], mask[i, width - len(e):] = torch.tensor(e), 1
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, generation_config=cfg)
        return batch * n / (time.perf_counter() - t), out[0, width:].tolist()

    figures = {f"b{b}": warm_median(run, b) for b in BATCHES}
    return {**figures, "tokens": run(1)[1]}


def peer_ct2(model_dir: Path, n: int) -> dict:
    """CTranslate2 float32 and int8, converted (once, cached) from the HF model of the same weights."""
    import ctranslate2

    from glotta.core.paths import content_digest
    from glotta.core.tokenizer import Tokenizer
    from glotta.export.onnx_export import hf_from_onnx

    cache = ROOT / "bench-results" / "ct2" / f"{model_dir.name}-{content_digest([model_dir / '1' / 'model.onnx'])}"
    if not (cache / "int8" / "model.bin").exists():
        hf_from_onnx(model_dir).save_pretrained(cache / "hf")
        shutil.copy(model_dir / "tokenizer.json", cache / "hf" / "tokenizer.json")  # CT2 takes its vocabulary there
        for q in ("float32", "int8"):
            ctranslate2.converters.TransformersConverter(str(cache / "hf")).convert(str(cache / q), quantization=q,
                                                                                    force=True)
    tok = Tokenizer(model_dir / "tokenizer.json")
    out: dict = {}
    for q in ("float32", "int8"):
        gen = ctranslate2.Generator(str(cache / q), device="cpu", compute_type=q, intra_threads=os.cpu_count() or 1)

        def run(batch: int) -> tuple[float, list[int]]:
            pieces = [[tok._tok.id_to_token(i) for i in tok.encode(p)] for p in batch_prompts(batch)]
            t = time.perf_counter()
            res = gen.generate_batch(pieces, max_length=n, min_length=n, sampling_topk=1,
                                     include_prompt_in_result=False)
            return sum(len(r.sequences_ids[0]) for r in res) / (time.perf_counter() - t), res[0].sequences_ids[0]

        out |= {f"{q} b{b}": warm_median(run, b) for b in BATCHES}
        out[f"{q} tokens"] = run(1)[1]
    return out


def peer_glotta(model_dir: Path, n: int) -> dict:
    from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions
    from glotta.server.engine.onnx_engine import OnnxEngine

    async def run(engine, batch: int) -> tuple[float, list[int]]:
        await engine.start()

        async def one(p: str) -> list[int]:
            ids: list[int] = []
            # stream=False: the whole answer at the end, as CTranslate2's generate_batch and HF return it
            req = GenerationRequest(p, n, SamplingParams(top_k=1), StopConditions(stop_on_eod=False), stream=False)
            async for c in engine.generate(req):
                ids += c.token_ids
            return ids

        t = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in batch_prompts(batch)))
        dt = time.perf_counter() - t
        await engine.stop()
        return sum(map(len, results)) / dt, results[0]

    from glotta.server.engine.scheduling import SchedulerPolicy

    out: dict = {}
    for precision in ("fp32", "int8"):
        for spec, batches in (("", BATCHES), (" spec", (1,))):
            engine = OnnxEngine(model_dir, precision=precision,
                                policy=SchedulerPolicy(speculate=SPECULATE if spec else 0))
            measure = lambda b, e=engine: asyncio.run(run(e, b))  # noqa: E731
            out |= {f"{precision}{spec} b{b}": warm_median(measure, b) for b in batches}
            out[f"{precision}{spec} tokens"] = measure(1)[1]
            del engine, measure  # its ONNX Runtime threads must not spin beside the next one
    return out


def peer_matmul_rate() -> dict:
    """fp32 GEMM FLOP/s on all cores (ONNX Runtime's MLAS, the kernels the engine uses), 512 × 512 × 512."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [512, 512]) for x in "ab"],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [512, 512])])
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    s = ort.InferenceSession(helper.make_model(g).SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    s.run(None, {"a": a, "b": a})
    t, reps = time.perf_counter(), 50
    for _ in range(reps):
        s.run(None, {"a": a, "b": a})
    return {"flops": reps * 2 * 512**3 / (time.perf_counter() - t)}


PEERS = {"hf": peer_hf, "ct2": peer_ct2, "glotta": peer_glotta}


def run_peer(name: str, model: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--peer", name, "--model", model, "--new-tokens", str(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- over HTTP -------------------------------------------------------------------------------------------------------


async def http_aggregate(url: str, model: str, clients: int, requests_each: int, n: int) -> float:
    """Output tokens/s of `clients` concurrent clients, each sending `requests_each` requests in turn. The load runs
    on aiohttp: it shares the cores with the server, and httpx's pure-Python HTTP took ~20 % of a core at 16 clients
    (measured: 0.17 s of CPU per run against aiohttp's 0.02 s), which the server then lacked."""
    import aiohttp

    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=300)) as http:

        async def worker(w: int) -> int:
            total = 0
            for r in range(requests_each):
                body = {"model": model, "prompt": PROMPTS[(w + r) % len(PROMPTS)], "max_tokens": n,
                        "temperature": 0, "ignore_eos": True}
                async with http.post("/v1/completions", json=body) as resp:
                    resp.raise_for_status()
                    total += (await resp.json())["usage"]["completion_tokens"]
            return total

        t = time.perf_counter()
        tokens = sum(await asyncio.gather(*(worker(w) for w in range(clients))))
        return tokens / (time.perf_counter() - t)


def ttft_256(url: str, model: str, tokenizer, count: int = 20) -> list[float]:
    """Seconds to the first streamed token of a 256-token prompt (one request at a time)."""
    words = " ".join(PROMPTS * 40).split()
    prompt = " ".join(words[:256])
    while len(tokenizer.encode(prompt)) > 256:
        prompt = prompt.rsplit(" ", 1)[0]
    times = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(count):
            body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0, "stream": True}
            t = time.perf_counter()
            with http.stream("POST", "/v1/completions", json=body) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        times.append(time.perf_counter() - t)
                        break
    return times


def http_figures(model: str, n: int, repeats: int, threads: int | None) -> dict:
    from glotta.clients.local_gateway import LocalGateway
    from glotta.modeling.model_folder import ModelFolder, resolve_model

    tok = ModelFolder.open(resolve_model(model, ROOT / "model_repository")).tokenizer()
    out: dict = {}
    for precision, extra in (("fp32", []), ("int8", ["--precision", "int8"])):
        for spec in ("", " spec"):
            gateway = LocalGateway(["--model", model, "--log-level", "warning", *extra,
                                    *(["--threads", str(threads)] if threads else []),
                                    *(["--speculate", str(SPECULATE)] if spec else [])])
            try:
                asyncio.run(http_aggregate(gateway.url, model, 4, 1, 16))  # warm-up
                with console.status(f"HTTP {precision}{spec}: 1 and 16 clients, time to first token"):
                    for _ in range(repeats):
                        for clients, each in ((1, 4), (16, 2))[: 1 if spec else 2]:
                            out.setdefault(f"{precision}{spec} c{clients}", []).append(
                                asyncio.run(http_aggregate(gateway.url, model, clients, each, n)))
                    if not spec:
                        out[f"{precision} ttft256"] = ttft_256(gateway.url, model, tok)
            finally:
                gateway.stop()
    return out


# -- report ----------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glotta-fr-tiny")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the gateway (default: all)")
    ap.add_argument("--output", type=Path, default=ROOT / "bench-results" / "serving_spine.json")
    ap.add_argument("--peer", choices=[*PEERS, "matmul"], help=argparse.SUPPRESS)
    a = ap.parse_args()

    from glotta.modeling.model_folder import ModelFolder, resolve_model

    model_dir = resolve_model(a.model, ROOT / "model_repository")
    if a.peer:
        print(json.dumps(peer_matmul_rate() if a.peer == "matmul" else PEERS[a.peer](model_dir, a.new_tokens)))
        return
    n = a.new_tokens
    runs: dict[str, list] = {}
    with console.status("in-process peers") as status:
        for r in range(a.repeats):
            for peer in (*PEERS, "matmul"):
                status.update(f"repeat {r + 1}/{a.repeats}: {peer} (own process)")
                for k, v in run_peer(peer, a.model, n).items():
                    runs.setdefault(f"{peer} {k}", []).append(v)
    http = http_figures(a.model, n, a.repeats, a.threads)

    med = lambda k: statistics.median(runs[k] if k in runs else http[k])  # noqa: E731
    flops_per_token = 2 * ModelFolder.open(model_dir).spec.parameters
    rate = med("matmul flops")
    t = Table(title=f"{a.model}: greedy, {n} new tokens, {os.cpu_count()} cores, tokens/s, median of {a.repeats}")
    for col in ("batch / clients", "HF", "CT2 fp32", "CT2 int8", "Glotta fp32", "Glotta int8",
                "HTTP fp32", "HTTP int8", "HTTP fp32 / CT2 fp32", "HTTP int8 / CT2 int8", "int8 / fp32 (HTTP)",
                "fp32 share of GEMM limit"):
        t.add_column(col, justify="right")
    for b in BATCHES:
        f32, i8 = med(f"fp32 c{b}"), med(f"int8 c{b}")
        ct_f, ct_i = med(f"ct2 float32 b{b}"), med(f"ct2 int8 b{b}")
        t.add_row(str(b), f"{med(f'hf b{b}'):.0f}", f"{ct_f:.0f}", f"{ct_i:.0f}", f"{med(f'glotta fp32 b{b}'):.0f}",
                  f"{med(f'glotta int8 b{b}'):.0f}", f"{f32:.0f}", f"{i8:.0f}", f"{f32 / ct_f:.2f}×",
                  f"{i8 / ct_i:.2f}×", f"{i8 / f32:.2f}×", f"{flops_per_token * f32 / rate:.0%}")
    console.print(t)
    t = Table(title=f"batch 1 / 1 client with n-gram speculation (--speculate {SPECULATE}), tokens/s")
    for col in ("precision", "Glotta", "Glotta + spec", "HTTP", "HTTP + spec", "HTTP + spec / CT2", "spec gain (HTTP)"):
        t.add_column(col, justify="right")
    for precision, ct2 in (("fp32", "float32"), ("int8", "int8")):
        h, hs = med(f"{precision} c1"), med(f"{precision} spec c1")
        t.add_row(precision, f"{med(f'glotta {precision} b1'):.0f}", f"{med(f'glotta {precision} spec b1'):.0f}",
                  f"{h:.0f}", f"{hs:.0f}", f"{hs / med(f'ct2 {ct2} b1'):.2f}×", f"{hs / h:.2f}×")
    console.print(t)
    same = runs["glotta fp32 spec tokens"][0] == runs["glotta fp32 tokens"][0]
    console.print(f"greedy tokens with speculation {'==' if same else '!='} without")
    hf_tokens, glotta_tokens = runs["hf tokens"][0], runs["glotta fp32 tokens"][0]
    console.print(f"greedy tokens, batch 1, fp32: Glotta {'==' if glotta_tokens == hf_tokens else '!='} HF generate; "
                  f"CT2 float32 {'==' if runs['ct2 float32 tokens'][0] == hf_tokens else '!='} HF generate")
    for precision in ("fp32", "int8"):
        ttft = np.array(http[f"{precision} ttft256"]) * 1000
        console.print(f"time to first token, 256-token prompt, {precision}: p50 {np.percentile(ttft, 50):.1f} ms, "
                      f"p95 {np.percentile(ttft, 95):.1f} ms")
    console.print(f"fp32 GEMM rate here: {rate / 1e9:.1f} GFLOP/s; {flops_per_token / 1e6:.1f} MFLOP per token")
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({"in_process": runs, "http": http, "new_tokens": n}, indent=1))
    console.print(f"raw figures: {a.output}")


if __name__ == "__main__":
    main()
