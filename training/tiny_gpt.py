"""Recipe for the shipped demo models: byte-level BPE + a small GPT-2 (Megatron GPT layout) trained on CPU.

    python -m glotta.training.tiny_gpt --input text.jsonl.gz --lang fr --output model_repository/glotta-fr-tiny

Any JSONL (optionally gzipped) with a `text` field works. The result is a model folder the CPU engine serves:
`tokenizer.json` (+ Megatron-style `vocab.json`/`merges.txt`), `glotta.json`, `1/model.onnx` (fp16-stored weights,
fp32 arithmetic) and a model card `README.md` with the measured validation perplexity.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

EOD = "<|endoftext|>"


@dataclass
class Recipe:
    vocab_size: int = 8192
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 8
    n_positions: int = 512
    seq_len: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    clip: float = 1.0
    max_steps: int = 3000
    time_budget_s: float = 900.0
    valid_fraction: float = 0.03
    seed: int = 1234


def read_texts(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


def is_heldout(text: str, fraction: float) -> bool:
    """Deterministic split on a hash of the document, so reruns hold out the same documents."""
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return h / 2**32 < fraction


def pack(token_lists: list[list[int]], eod: int, block: int) -> np.ndarray:
    """Megatron's sampling: documents joined with EOD, cut into fixed blocks of block+1 tokens."""
    flat = np.fromiter((t for ids in token_lists for t in (*ids, eod)), dtype=np.int64)
    n = (len(flat) - 1) // block
    return np.stack([flat[i * block : i * block + block + 1] for i in range(n)])


def evaluate(model, blocks: np.ndarray, batch_size: int) -> float:
    from .local_trainer import mean_loss

    return math.exp(mean_loss(model, blocks, batch_size))


def train(input_path: Path, lang: str, out: Path, r: Recipe) -> dict:
    import torch
    from glotta.export.onnx_export import export_gpt2_onnx
    from glotta.training.tokenizer import train_bpe
    from tqdm import tqdm
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(r.seed)
    rng = np.random.default_rng(r.seed)
    t0 = time.time()
    texts = read_texts(input_path)
    train_texts = [t for t in texts if not is_heldout(t, r.valid_fraction)]
    valid_texts = [t for t in texts if is_heldout(t, r.valid_fraction)]
    tok = train_bpe(train_texts, r.vocab_size, out)
    eod = tok.token_to_id(EOD)
    enc = lambda ts: [e.ids for e in tok.encode_batch(ts)]  # noqa: E731
    train_blocks = pack(enc(train_texts), eod, r.seq_len)
    valid_blocks = pack(enc(valid_texts), eod, r.seq_len)
    tokenizer_s = time.time() - t0

    cfg = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=r.n_positions,
        n_embd=r.n_embd,
        n_layer=r.n_layer,
        n_head=r.n_head,
        bos_token_id=eod,
        eos_token_id=eod,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=r.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int, total: int) -> float:
        if step < r.warmup_steps:
            return r.lr * (step + 1) / r.warmup_steps
        progress = min(1.0, (step - r.warmup_steps) / max(1, total - r.warmup_steps))
        return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * progress))

    # Estimate how many steps fit the time budget from the first few, then fix the cosine schedule to that length.
    total_steps = r.max_steps
    t_train = time.time()
    bar = tqdm(total=total_steps, desc=f"train {lang}")
    step = 0
    losses = []
    while step < total_steps:
        idx = rng.integers(0, len(train_blocks), r.batch_size)
        b = torch.from_numpy(train_blocks[idx])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total_steps)
        logits = model(input_ids=b[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.clip)
        opt.step()
        losses.append(float(loss))
        step += 1
        if step == 20:
            per_step = (time.time() - t_train) / step
            total_steps = max(step + 1, min(r.max_steps, int(r.time_budget_s / per_step)))
            bar.total = total_steps
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        bar.update()
    bar.close()
    train_s = time.time() - t_train

    # Store in fp16 (half the bytes in git) and measure perplexity on exactly the weights that ship.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    valid_ppl = evaluate(model, valid_blocks, r.batch_size)
    export_gpt2_onnx(model, out / "1" / "model.onnx", fp16_weights=True)

    meta = {
        "name": out.name,
        "language": lang,
        "architecture": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "eod_token": EOD,
        "parameters": params,
        "train_tokens": int(step * r.batch_size * r.seq_len),
        "train_steps": step,
        "train_documents": len(train_texts),
        "valid_documents": len(valid_texts),
        "valid_tokens": int(valid_blocks[:, 1:].size),
        "valid_perplexity": round(valid_ppl, 2),
        "final_train_loss": round(float(np.mean(losses[-50:])), 3),
        "tokenizer_seconds": round(tokenizer_s, 1),
        "train_seconds": round(train_s, 1),
        "train_threads": torch.get_num_threads(),
        "source": input_path.name,
        "recipe": asdict(r),
    }
    (out / "glotta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(model_card(meta))
    return meta


def model_card(m: dict) -> str:
    lang = {"fr": "French", "es": "Spanish"}.get(m["language"], m["language"])
    return f"""# {m['name']}

A tiny {lang} GPT trained by Glotta's demo recipe (`python -m glotta.training.tiny_gpt`) on CPU. It exists to make the
serving stack real end to end; it writes {lang}-looking text, not facts.

| | |
|---|---|
| architecture | GPT-2 / Megatron GPT layout: learned positions, pre-LN, GELU, tied embeddings |
| layers × hidden × heads | {m['n_layer']} × {m['n_embd']} × {m['n_head']} (head size {m['n_embd'] // m['n_head']}) |
| parameters | {m['parameters']:,} |
| vocabulary | {m['vocab_size']:,} byte-level BPE tokens trained on the same text, `{m['eod_token']}` = EOD |
| context | {m['n_positions']} tokens (trained on {m['recipe']['seq_len']}-token blocks) |
| data | `{m['source']}`: {m['train_documents']:,} documents (Debian documentation in {lang}), {m['valid_documents']} held out |
| training | {m['train_steps']:,} steps × {m['recipe']['batch_size']} × {m['recipe']['seq_len']} tokens = {m['train_tokens']:,} tokens, AdamW (β 0.9/0.95, wd {m['recipe']['weight_decay']}), cosine {m['recipe']['lr']} → {m['recipe']['min_lr']}, clip {m['recipe']['clip']} |
| training time | {m['train_seconds'] / 60:.1f} min with {m['train_threads']} CPU thread(s) (+ {m['tokenizer_seconds']:.0f} s tokenizer) |
| validation perplexity | **{m['valid_perplexity']}** on {m['valid_tokens']:,} tokens of held-out documents (fp16-rounded weights, as shipped) |
| final train loss | {m['final_train_loss']} |
| engine | `1/model.onnx`: ONNX with KV cache, weights stored fp16, fp32 arithmetic; INT8 derived at first use |
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True, help="JSONL(.gz) with a `text` field")
    p.add_argument("--lang", required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--time-budget", type=float, default=Recipe.time_budget_s, help="training seconds")
    p.add_argument("--max-steps", type=int, default=Recipe.max_steps)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    meta = train(a.input, a.lang, a.output, Recipe(time_budget_s=a.time_budget, max_steps=a.max_steps))
    print(json.dumps({k: meta[k] for k in ("name", "parameters", "valid_perplexity", "train_seconds")}))


if __name__ == "__main__":
    main()
