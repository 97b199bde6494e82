"""What the CPU engine's precisions cost in quality, on real text: fp32, INT8 and INT4 graphs of one model, beside
llama.cpp's f32 / q8_0 / q4_0 of the same weights.

    python benchmarks/quantization_quality.py [--model model_repository/glotta-fr-tiny]
        [--corpus ../shared/corpus/fr.jsonl.gz] [--docs 60] [--tokens 256] [--prompts 50] [--llama-cpp DIR]

Teacher-forced on the first `--tokens` tokens of the last `--docs` documents of the corpus: the share of positions
where each precision picks fp32's next token, and each precision's perplexity on those tokens. Free-running: the
first 32 greedy tokens after each of `--prompts` prompts (the first 16 tokens of the documents before those), as
the share of tokens equal to the same engine's full-precision text at the same position and the prompts whose 32
tokens are all equal. With `--llama-cpp` (a llama.cpp tree whose build/bin has llama-server and llama-quantize, as
benchmarks/peers.py builds it) the model is rebuilt as a GPT-2 Hugging Face folder, converted by llama.cpp's own
converter, quantized and served, and gets the same prompts as token ids.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import httpx
import numpy as np
from peers import Server, gguf_files

from glotta.core.net import free_port
from glotta.core.tokenizer import Tokenizer
from glotta.modeling.engine_graph import PRECISIONS, engine_graph
from glotta.server.engine.decoder_session import DecoderSession

ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS, PROMPT_TOKENS = 32, 16
LLAMA_CPP = {"fp32": "f32", "int8": "q8_0", "int4": "q4_0"}


def greedy(session: DecoderSession, prompt: list[int]) -> list[int]:
    (logits,), lengths = session.prefill([prompt], 0)
    out = [int(logits[-1].argmax())]
    while len(out) < NEW_TOKENS:
        logits = session.decode(np.array(out[-1:], np.int64), lengths)
        lengths = lengths + 1
        out.append(int(logits[0].argmax()))
    return out


def llama_cpp_texts(model: Path, llama_cpp: Path, prompts: list[list[int]]) -> dict[str, list[list[int]]]:
    """Greedy continuations from llama-server on each GGUF type of the model's weights."""
    from transformers import PreTrainedTokenizerFast

    from glotta.export.onnx_export import hf_from_onnx

    folder = ROOT / "bench-results" / "quality" / model.name / "hf"
    if not (folder / "config.json").exists():
        hf = hf_from_onnx(model)
        hf.save_pretrained(folder, safe_serialization=True)
        PreTrainedTokenizerFast(tokenizer_file=str(model / "tokenizer.json"), eos_token="<|endoftext|>",
                                bos_token="<|endoftext|>", unk_token="<|endoftext|>").save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())  # llama.cpp's GPT-2 converter reads n_ctx
        (folder / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}, indent=1))
    texts = {}
    for kind, path in gguf_files(folder, llama_cpp).items():
        port = free_port()
        server = Server("llama.cpp", [str(llama_cpp / "build" / "bin" / "llama-server"), "-m", str(path), "--port",
                                      str(port), "-t", "2", "-c", "1024", "-np", "1", "--no-webui"],
                        port, folder.parent / f"llama-server-{kind}.log")
        try:
            texts[kind] = [httpx.post(server.url + "/completion", timeout=120, json={
                "prompt": p, "n_predict": NEW_TOKENS, "temperature": 0, "ignore_eos": True, "cache_prompt": False,
                "return_tokens": True}).json()["tokens"] for p in prompts]
        finally:
            server.stop()
    return texts


def agreement(texts: list[list[int]], reference: list[list[int]]) -> tuple[float, int]:
    same = sum(a == b for t, r in zip(texts, reference) for a, b in zip(t, r))
    return same / sum(len(r) for r in reference), sum(t == r for t, r in zip(texts, reference))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "model_repository" / "glotta-fr-tiny")
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "fr.jsonl.gz")
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp tree with build/bin/llama-server and llama-quantize")
    a = ap.parse_args()
    tok = Tokenizer(a.model / "tokenizer.json")
    with gzip.open(a.corpus, "rt", encoding="utf-8") as f:
        documents = [json.loads(line)["text"] for line in f]
    texts, before = documents[-a.docs:], documents[: -a.docs]
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

    prompts = [ids[:PROMPT_TOKENS] for ids in map(tok.encode, reversed(before)) if len(ids) >= PROMPT_TOKENS]
    prompts = prompts[: a.prompts]
    ours = {p: [greedy(s, q) for q in prompts] for p, s in sessions.items()}
    theirs = llama_cpp_texts(a.model, a.llama_cpp, prompts) if a.llama_cpp else {}
    print(f"\nGreedy, {NEW_TOKENS} tokens after each of {len(prompts)} prompts ({PROMPT_TOKENS} tokens each): tokens "
          "equal to the same engine's full-precision text, and prompts whose text is all equal")
    print("| precision | Glotta | llama.cpp |\n|---|---|---|")
    for p in PRECISIONS:
        share, whole = agreement(ours[p], ours["fp32"])
        peer = LLAMA_CPP[p]
        cell = "–"
        if peer in theirs:
            s2, w2 = agreement(theirs[peer], theirs["f32"])
            cell = f"{peer}: {s2:.3f}, {w2}/{len(prompts)}"
        print(f"| {p} | {share:.3f}, {whole}/{len(prompts)} | {cell} |")
    if "f32" in theirs:
        share, whole = agreement(theirs["f32"], ours["fp32"])
        print(f"llama.cpp f32 against Glotta fp32 (the same weights): {share:.3f}, {whole}/{len(prompts)} prompts")


if __name__ == "__main__":
    main()
