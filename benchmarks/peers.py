"""Glotta's CPU engine at real sizes against llama.cpp's server, over HTTP, in one run (not part of the test suite).

    python benchmarks/peers.py [--shapes gpt2-124m,llama-134m] [--repeats 3] [--tokens 64] [--llama-cpp DIR]

Shapes, random weights (seeded): GPT-2 124M (GPT2Config defaults) and a 134M Llama (768 × 12, 12 heads, FFN 2048,
vocab 32,000, untied head), each with a byte-level BPE trained on local text and padded with added tokens to the
model's vocabulary. Every server gets the same token ids (32-token prompts; `/completion` with ids for llama.cpp,
`/v1/completions` with ids for Glotta — tokenizers never differ that way), greedy, exactly `--tokens` new tokens
(end of text ignored), 2 threads each:
  Glotta `glotta serve --precision fp32 | int8 | int4`;
  llama.cpp `llama-server` on f32, q8_0 and q4_0 GGUF files (built with CMake from the `llama-cpp-python` sdist's
  vendored sources: `--llama-cpp` points at that tree, whose build/bin holds llama-server and llama-quantize;
  `convert_hf_to_gguf.py` converts, told the pre-tokenizer is GPT-2's since it does not know a new BPE's hash, and
  that the Llama's vocabulary is a byte-level BPE, as Llama 3's, without trying sentencepiece first).
  CTranslate2 float32 / int8 in-process (no server; generate_batch of 16 prompts is its 16-client figure), when the
  `bench` extra is installed.
Per cell: tokens/s with 1 and 16 concurrent clients, time to first token (1 client, streaming), resident memory of
the server after the load; medians of `--repeats`; the load average before and after. A STREAM-like copy measures
the machine's memory bandwidth in the same run, and batch-1 decoding's share of it (weight bytes × tokens/s ÷
bandwidth) is printed. Refuses to start on a busy machine (1-minute load average above 0.5 per core): llama.cpp's
spinning threads collapse when another process holds the cores.
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
import psutil

from glotta.core.net import free_port

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench-results" / "peers"
THREADS = 2
PROMPT_TOKENS = 32
# a connection per request, for every server: llama-server drops idle keep-alive connections
NO_KEEPALIVE = httpx.Limits(max_connections=64, max_keepalive_connections=0)


def shape(name: str):
    from transformers import GPT2Config, LlamaConfig

    if name == "gpt2-124m":
        return GPT2Config(n_ctx=1024)  # n_ctx: llama.cpp's GPT-2 converter reads it; transformers 5 no longer writes it
    return LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                       intermediate_size=2048, vocab_size=32000, max_position_embeddings=2048,
                       tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)


def texts() -> list[str]:
    corpus = ROOT.parent / "shared" / "corpus" / "fr.jsonl.gz"
    if corpus.exists():
        import gzip

        with gzip.open(corpus, "rt", encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f]
    return [p.read_text() for p in ROOT.glob("**/*.md")]


def make_folder(name: str) -> Path:
    """The HF folder of a shape: random weights, a BPE trained here, padded with added tokens to the vocabulary."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = WORK / name / "hf"
    if (folder / "config.json").exists():
        return folder
    cfg = shape(name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(cfg.vocab_size, 16000), special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    tok.add_tokens([f"<pad_{i}>" for i in range(cfg.vocab_size - tok.get_vocab_size())])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")  # CTranslate2's converter wants all three
    model.config.eos_token_id = model.config.bos_token_id = 0
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    if name == "gpt2-124m":  # save_pretrained drops n_ctx; the GGUF converter needs it
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "n_ctx": 1024}, indent=1))
    return folder


def gguf_files(folder: Path, llama_cpp: Path) -> dict[str, Path]:
    out = folder.parent / "gguf"
    out.mkdir(exist_ok=True)
    f32 = out / "f32.gguf"
    if not f32.exists():
        code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[1:]; "
                "import conversion.base as b; b.TextModel.get_vocab_base_pre = lambda self, t: 'gpt-2'; "
                "import conversion.llama as l; l.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2(); "
                "import convert_hf_to_gguf as c; sys.argv = ['convert', sys.argv[1], '--outtype', 'f32', "
                "'--outfile', sys.argv[2]]; c.main()")
        subprocess.run([sys.executable, "-c", code, str(llama_cpp), str(folder), str(f32)], check=True,
                       capture_output=True)
    files = {"f32": f32}
    for q in ("q8_0", "q4_0"):
        files[q] = out / f"{q}.gguf"
        if not files[q].exists():
            subprocess.run([str(llama_cpp / "build" / "bin" / "llama-quantize"), str(f32), str(files[q]), q.upper()],
                           check=True, capture_output=True)
    return files


class Server:
    """A server process on a free port: Glotta's gateway or llama-server, started, waited for, stopped."""

    def __init__(self, kind: str, cmd: list[str], port: int, log: Path) -> None:
        self.kind, self.port, self.url = kind, port, f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
        self.proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 600
        health = "/health/ready" if kind == "glotta" else "/health"
        while time.time() < deadline:
            assert self.proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(self.url + health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{cmd[0]} not ready: {log}")

    def rss_mb(self) -> float:
        procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20

    async def ask(self, http: httpx.AsyncClient, ids: list[int], n: int, stream: bool = False) -> float:
        """One request; returns the time to its first token (streamed) or to its end."""
        if self.kind == "glotta":
            path, body = "/v1/completions", {"prompt": ids, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                                             "stream": stream}
        else:
            path, body = "/completion", {"prompt": ids, "n_predict": n, "temperature": 0, "ignore_eos": True,
                                         "cache_prompt": False, "stream": stream}
        start = time.perf_counter()
        if not stream:
            r = await http.post(self.url + path, json=body)
            r.raise_for_status()
            return time.perf_counter() - start
        first = None
        async with http.stream("POST", self.url + path, json=body) as r:
            async for line in r.aiter_lines():  # read to the end: the next request finds the server idle
                if first is None and line.startswith("data: "):
                    first = time.perf_counter() - start
        if first is None:
            raise RuntimeError("no event")
        return first

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def throughput(server: Server, prompts: list[list[int]], clients: int, n: int) -> float:
    async with httpx.AsyncClient(timeout=600, limits=NO_KEEPALIVE) as http:
        await server.ask(http, prompts[0], 4)  # warm
        start = time.perf_counter()
        await asyncio.gather(*(server.ask(http, prompts[i % len(prompts)], n) for i in range(clients)))
        return clients * n / (time.perf_counter() - start)


async def ttft(server: Server, prompts: list[list[int]], n: int) -> float:
    async with httpx.AsyncClient(timeout=600, limits=NO_KEEPALIVE) as http:
        return statistics.median([await server.ask(http, p, n, stream=True) for p in prompts[:8]])


def bandwidth_gbs(mb: int = 256) -> float:
    """STREAM-like copy on THREADS threads (numpy's copy releases the GIL), each its own arrays: bytes read +
    written per second, best of 5."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(np.ones(mb * 2**20 // 8), np.zeros(mb * 2**20 // 8)) for _ in range(THREADS)]
    best = 0.0
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in range(5):
            start = time.perf_counter()
            list(pool.map(lambda p: np.copyto(p[1], p[0]), pairs))
            best = max(best, 2 * sum(a.nbytes for a, _ in pairs) / (time.perf_counter() - start))
    return best / 1e9


def weight_bytes(folder: Path, precision: str) -> float:
    """Bytes a batch-1 step reads: every matrix once (the embedding table only for the token's row)."""
    cfg = json.loads((folder / "config.json").read_text())
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        for k in f.keys():
            if "embed_tokens" in k or k.endswith("wte.weight") or "wpe" in k or "norm" in k or ".ln_" in k:
                continue
            total += int(np.prod(f.get_slice(k).get_shape()))
    if cfg.get("tie_word_embeddings", True):
        total += cfg["vocab_size"] * cfg.get("hidden_size", cfg.get("n_embd", 768))
    per = {"fp32": 4, "f32": 4, "int8": 1, "q8_0": 34 / 32, "int4": 0.5 + 8 / 32, "q4_0": 18 / 32}[precision]
    return total * per


CT2_CODE = """
import json, statistics, sys, time
import ctranslate2
folder, out, compute, n, prompts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
from tokenizers import Tokenizer
tok = Tokenizer.from_file(folder + '/tokenizer.json')
gen = ctranslate2.Generator(out, device='cpu', compute_type=compute, intra_threads=int(sys.argv[6]))
pieces = [[tok.id_to_token(i) for i in p] for p in prompts]
result = {}
for b in (1, 16):
    rows = (pieces * b)[:b]
    gen.generate_batch(rows[:1], max_length=4, min_length=4, sampling_topk=1, include_prompt_in_result=False)
    times, made = [], 0
    for _ in range(int(sys.argv[7])):
        t = time.perf_counter()
        res = gen.generate_batch(rows, max_length=n, min_length=n, sampling_topk=1, include_prompt_in_result=False)
        times.append(time.perf_counter() - t)
        made = sum(len(r.sequences_ids[0]) for r in res)
    result[b] = made / statistics.median(times)
print(json.dumps(result))
"""


def ctranslate2_cells(folder: Path, prompts: list[list[int]], n: int, repeats: int) -> list[dict]:
    """CTranslate2 float32 and int8 in-process (its own child process: its OpenMP threads stay its own), converted
    once from the same HF folder; generate_batch over 16 prompts is its 16-client figure (it has no server)."""
    try:
        import ctranslate2
    except ImportError:
        print("CTranslate2 skipped: pip install ctranslate2 (the `bench` extra)")
        return []
    rows = []
    for compute in ("float32", "int8"):
        out = folder.parent / f"ct2-{compute}"
        if not (out / "model.bin").exists():
            ctranslate2.converters.TransformersConverter(str(folder)).convert(str(out), quantization=compute,
                                                                              force=True)
        r = subprocess.run([sys.executable, "-c", CT2_CODE, str(folder), str(out), compute, str(n),
                            json.dumps(prompts[:16]), str(THREADS), str(repeats)], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        if r.returncode:
            print(f"CTranslate2 {compute} failed: {r.stderr[-500:]}")
            continue
        speed = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append({"engine": "ctranslate2 (in-process)", "precision": compute, "tok/s @1": round(speed["1"], 1),
                     "tok/s @16": round(speed["16"], 1), "TTFT ms": None, "RSS MB": None,
                     "bandwidth share @1": None})
    return rows


def kv_mb_per_1k(folder: Path, engine: str) -> float:
    """KV cache per 1,000 tokens: keys and values of every layer; Glotta keeps them in fp32 at every precision,
    llama-server in f16 (its default cache type)."""
    cfg = json.loads((folder / "config.json").read_text())
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    hidden = cfg.get("hidden_size", cfg.get("n_embd"))
    heads = cfg.get("num_attention_heads", cfg.get("n_head"))
    kv = cfg.get("num_key_value_heads", heads) * hidden // heads
    return 2 * layers * kv * (4 if engine == "glotta" else 2) * 1000 / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="gpt2-124m,llama-134m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp source tree with build/bin/llama-server")
    ap.add_argument("--force", action="store_true", help="run even on a busy machine")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1) and not a.force:
        print(f"the machine is busy (load average {load:.2f} on {os.cpu_count()} cores): figures would mean nothing")
        return 2
    bw = bandwidth_gbs()
    print(f"memory bandwidth (copy): {bw:.1f} GB/s; load average {load:.2f}", flush=True)
    rows = []
    for name in a.shapes.split(","):
        folder = make_folder(name)
        rng = np.random.default_rng(0)
        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        prompts = [rng.integers(10, vocab - 10, PROMPT_TOKENS).tolist() for _ in range(16)]
        cells = [("glotta", p) for p in ("fp32", "int8", "int4")]
        files = gguf_files(folder, a.llama_cpp) if a.llama_cpp else {}
        cells += [("llama.cpp", q) for q in files]
        for kind, precision in cells:
            port, log = free_port(), folder.parent / f"{kind}-{precision}.log"
            if kind == "glotta":
                cmd = [sys.executable, "-m", "glotta.cli", "serve", "--model", str(folder), "--precision", precision,
                       "--threads", str(THREADS), "--port", str(port), "--grpc-port", "0", "--log-level", "warning"]
            else:
                cmd = [str(a.llama_cpp / "build" / "bin" / "llama-server"), "-m", str(files[precision]), "--port",
                       str(port), "-t", str(THREADS), "-c", "8192", "-np", "16", "--no-webui"]
            if kind == "glotta":  # a first start converts and quantizes (cached): memory is measured on the next
                Server(kind, cmd, port, log).stop()
            before = os.getloadavg()[0]
            server = Server(kind, cmd, port, log)
            try:
                one = statistics.median(asyncio.run(throughput(server, prompts, 1, a.tokens))
                                        for _ in range(a.repeats))
                many = statistics.median(asyncio.run(throughput(server, prompts, 16, a.tokens))
                                         for _ in range(a.repeats))
                first = asyncio.run(ttft(server, prompts, 4)) * 1000
                rss = server.rss_mb()
            finally:
                server.stop()
            share = weight_bytes(folder, precision) * one / (bw * 1e9)
            row = {"shape": name, "engine": kind, "precision": precision, "tok/s @1": round(one, 1),
                   "tok/s @16": round(many, 1), "TTFT ms": round(first, 1), "RSS MB": round(rss),
                   "bandwidth share @1": round(share, 3), "load before/after": (round(before, 2),
                                                                               round(os.getloadavg()[0], 2))}
            rows.append(row)
            print(json.dumps(row), flush=True)
        for row in ctranslate2_cells(folder, prompts, a.tokens, a.repeats):
            rows.append({"shape": name, **row, "load before/after": None})
            print(json.dumps(rows[-1]), flush=True)
    for name in a.shapes.split(","):
        folder = WORK / name / "hf"
        print(f"{name}: KV cache per 1,000 tokens: Glotta {kv_mb_per_1k(folder, 'glotta'):.1f} MB (fp32), "
              f"llama.cpp {kv_mb_per_1k(folder, 'llama.cpp'):.1f} MB (f16)")
    print("\n| shape | engine | precision | tok/s @1 | tok/s @16 | TTFT ms | RSS MB | bandwidth share @1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        shown = [r[k] if r[k] is not None else "–" for k in ("tok/s @1", "tok/s @16", "TTFT ms", "RSS MB",
                                                              "bandwidth share @1")]
        print(f"| {r['shape']} | {r['engine']} | {r['precision']} | " + " | ".join(map(str, shown)) + " |")
    pairs = [("int8", "llama.cpp", "q8_0"), ("int4", "llama.cpp", "q4_0"), ("fp32", "llama.cpp", "f32"),
             ("fp32", "ctranslate2 (in-process)", "float32"), ("int8", "ctranslate2 (in-process)", "int8")]
    for name in a.shapes.split(","):
        cell = {(r["engine"], r["precision"]): r for r in rows if r["shape"] == name}
        for g, peer, q in pairs:
            if ("glotta", g) in cell and (peer, q) in cell:
                x, y = cell["glotta", g], cell[peer, q]
                first = f"; TTFT {x['TTFT ms'] / y['TTFT ms']:.2f}" if y["TTFT ms"] else ""
                print(f"{name}: Glotta {g} / {peer} {q}: {x['tok/s @1'] / y['tok/s @1']:.2f} at 1 client, "
                      f"{x['tok/s @16'] / y['tok/s @16']:.2f} at 16{first}")
    (WORK / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
