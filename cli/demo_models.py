"""The shipped demo models, made by the whole Glotta pipeline — the same commands a user runs on OSCAR:

    python -m glotta.cli.demo_models --input ../shared/corpus/fr.jsonl.gz --lang fr \\
        --output model_repository/glotta-fr-tiny          (`make demo-models` builds fr and es side by side)

1. `glotta data prepare`  clean → language → blacklist → exact + MinHash dedup
2. held-out split          3 % of the prepared documents, by a hash of their text (the tokenizer never sees them)
3. `glotta tokenizer train` byte-level BPE, 8,192 tokens
4. `glotta data convert`   train and validation `.bin/.idx`
5. `glotta train local`    preset demo-tiny (4 × 256, 8 heads), Megatron checkpoints, loss curve
6. export                  Megatron checkpoint → ONNX with KV cache (fp16-stored weights) + model card, measured
                           validation perplexity on exactly the weights that ship

Each step leaves its result in the work folder and is skipped when it is there, so an interrupted build resumes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import yaml

from glotta.core.atomic import AtomicFile


def _glotta(*argv: str) -> None:
    from .main import build_parser

    args = build_parser().parse_args(list(argv))
    print("$ glotta " + " ".join(argv), flush=True)
    code = args.func(args)
    if code:
        raise SystemExit(f"`glotta {' '.join(argv)}` failed ({code})")


def heldout(text: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return h / 2**32 < fraction


def split(cleaned: Path, work: Path, fraction: float) -> dict:
    counts = {"train": 0, "valid": 0}
    if (work / "split.json").exists():
        return json.loads((work / "split.json").read_text())
    with AtomicFile(work / "train.jsonl") as tr, AtomicFile(work / "valid.jsonl") as va:
        for part in sorted(cleaned.glob("part-*.jsonl.gz")):
            for line in gzip.open(part, "rb"):
                which = "valid" if heldout(json.loads(line)["text"], fraction) else "train"
                (va if which == "valid" else tr).write(line)
                counts[which] += 1
    (work / "split.json").write_text(json.dumps(counts))  # last: the step's completion marker
    return counts


def build(input_path: Path, lang: str, out: Path, work: Path, threads: int, preset: str, train_samples: int | None,
          vocab_size: int, valid_fraction: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not (work / "cleaned" / "stats.json").exists():
        _glotta("data", "prepare", "--input", str(input_path), "--lang", lang, "--output", str(work / "cleaned"),
                "--workers", "1")
    prep = json.loads((work / "cleaned" / "stats.json").read_text())
    counts = split(work / "cleaned", work, valid_fraction)
    tok = work / "tokenizer"
    if not (tok / "merges.txt").exists():
        _glotta("tokenizer", "train", "--input", str(work / "train.jsonl"), "--vocab-size", str(vocab_size),
                "--output", str(tok))
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok / "tokenizer.json")).get_vocab_size()
    for name in ("train", "valid"):
        if not (work / "data" / f"{name}_text_document.idx").exists():
            (work / "data").mkdir(exist_ok=True)
            _glotta("data", "convert", "--input", str(work / f"{name}.jsonl"), "--output-prefix",
                    str(work / "data" / name), "--vocab-file", str(tok / "vocab.json"), "--merge-file",
                    str(tok / "merges.txt"), "--append-eod", "--workers", "1")
    prep_s = time.time() - t0
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump({"preset": preset, "name": out.name, "vocab_size": vocab,
                                      **({"train_samples": train_samples} if train_samples else {})}))
    t1 = time.time()
    _glotta("train", "local", str(config), "--data-path", str(work / "data" / "train_text_document"),
            "--valid-data-path", str(work / "data" / "valid_text_document"), "--save", str(work / "checkpoints"),
            "--threads", str(threads))
    train_s = time.time() - t1
    return export(work, out, tok, vocab, lang, prep, counts, prep_s, train_s, threads, input_path)


def export(work: Path, out: Path, tok: Path, vocab: int, lang: str, prep: dict, counts: dict, prep_s: float,
           train_s: float, threads: int, source: Path) -> dict:
    import torch

    from glotta.core.megatron.checkpoint import latest, load
    from glotta.core.megatron.indexed import MegatronDataset
    from glotta.export.onnx_export import export_gpt2_onnx
    from glotta.modeling.megatron_hf import to_hf
    from glotta.modeling.megatron_reader import read
    from glotta.modeling.model_folder import ModelFolder
    from glotta.modeling.perplexity import mean_loss, samples_of
    from glotta.modeling.spec import ModelSpec
    from glotta.server.triton.config_writers.cpu import write_model

    ckpt = read(work / "checkpoints", vocab)
    cfg = load(latest(work / "checkpoints"))["args"].glotta_config
    model = to_hf(ckpt)
    with torch.no_grad():  # perplexity of exactly what ships: fp16-stored weights
        for p in model.parameters():
            p.copy_(p.half().float())
    valid = MegatronDataset(work / "data" / "valid_text_document")
    samples = samples_of(valid, range(len(valid)), cfg["seq_length"])
    ppl = math.exp(mean_loss(model, samples))
    history = json.loads((work / "checkpoints" / "loss.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    export_gpt2_onnx(model, out / "1" / "model.onnx", fp16_weights=True)
    stages = {n: {"in": s["docs_in"], "out": s["docs_out"], "removed": s["removed"]} for n, s in prep["stages"].items()}
    steps = len(history["loss"])
    card = {
        "language": lang,
        "train_steps": steps, "train_tokens": steps * cfg["global_batch_size"] * cfg["seq_length"],
        "train_documents": counts["train"], "valid_documents": counts["valid"],
        "valid_tokens": int(samples[:, 1:].size), "valid_perplexity": round(ppl, 2),
        "final_train_loss": round(sum(history["loss"][-50:]) / len(history["loss"][-50:]), 3),
        "data_preparation": {"input_documents": prep["input"]["docs"], "stages": stages},
        "prepare_seconds": round(prep_s, 1), "train_seconds": round(train_s, 1), "train_threads": threads,
        "train_config": cfg,
    }
    spec = ModelSpec(name=out.name, family=ckpt.family, architecture=ckpt.architecture, weights="exchange",
                     source=source.name, card=card)
    ModelFolder.write(out, spec, tok)
    (out / "README.md").write_text(model_card(spec))
    write_model(out)
    shutil.copy(work / "checkpoints" / "loss.png", out / "loss.png")
    return {"name": spec.name, "parameters": spec.parameters, "vocab_size": spec.architecture.vocab_size, **card}


def model_card(spec) -> str:
    a, m = spec.architecture, spec.card
    m = {**m, "name": spec.name, "n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head,
         "parameters": spec.parameters, "vocab_size": a.vocab_size, "eod_token": spec.tokenizer.eos_tokens[0],
         "n_positions": a.n_positions, "source": spec.source}
    lang = {"fr": "French", "es": "Spanish"}.get(m["language"], m["language"])
    c = m["train_config"]
    prep = "; ".join(f"{n} {s['in']:,} → {s['out']:,}" for n, s in m["data_preparation"]["stages"].items())
    return f"""# {m['name']}

A tiny {lang} GPT made by Glotta's whole pipeline on CPU (`make demo-models`, i.e. `python -m
glotta.cli.demo_models`): data preparation, tokenizer training, Megatron `.bin/.idx` conversion, `glotta train
local` (Megatron checkpoints), export to ONNX. It exists to make the serving stack real end to end; it writes
{lang}-looking text, not facts.

| | |
|---|---|
| architecture | GPT-2 / Megatron GPT layout: learned positions, pre-LN, GELU, tied embeddings |
| layers × hidden × heads | {m['n_layer']} × {m['n_embd']} × {m['n_head']} (head size {m['n_embd'] // m['n_head']}) |
| parameters | {m['parameters']:,} |
| vocabulary | {m['vocab_size']:,} byte-level BPE tokens trained on the training documents, `{m['eod_token']}` = EOD |
| context | {m['n_positions']} tokens (trained on {c['seq_length']}-token samples) |
| data | `{m['source']}` (Debian documentation in {lang}): {m['data_preparation']['input_documents']:,} documents; `glotta data prepare`: {prep}; then {m['train_documents']:,} for training, {m['valid_documents']} held out (by a hash of their text) |
| training | `glotta train local` (preset `demo-tiny`): {m['train_steps']:,} steps × {c['global_batch_size']} × {c['seq_length']} tokens = {m['train_tokens']:,} tokens, AdamW (β {c['adam_beta1']}/{c['adam_beta2']}, wd {c['weight_decay']}), warm-up {c['lr_warmup_samples']} samples, cosine {c['lr']} → {c['min_lr']}, clip {c['clip_grad']}; loss curve in `loss.png` |
| time | data preparation, tokenizer and conversion {m['prepare_seconds']:.0f} s; training {m['train_seconds'] / 60:.1f} min with {m['train_threads']} CPU thread(s) |
| validation perplexity | **{m['valid_perplexity']}** on {m['valid_tokens']:,} tokens of the held-out documents (fp16-rounded weights, as shipped) |
| final train loss | {m['final_train_loss']} |
| engine | `1/model.onnx`: ONNX with KV cache, weights stored fp16, fp32 arithmetic; INT8 derived at first use |
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True, help="JSONL(.gz) with a `text` field, or any prepare input")
    p.add_argument("--lang", required=True)
    p.add_argument("--output", type=Path, required=True, help="model folder (e.g. model_repository/glotta-fr-tiny)")
    p.add_argument("--work", type=Path, help="intermediate results (default build/demo-<lang>)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="demo-tiny")
    p.add_argument("--train-samples", type=int, help="override the preset's")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--valid-fraction", type=float, default=0.03)
    a = p.parse_args(argv)
    meta = build(a.input, a.lang, a.output, a.work or Path("build") / f"demo-{a.lang}", a.threads, a.preset,
                 a.train_samples, a.vocab_size, a.valid_fraction)
    print(json.dumps({k: meta[k] for k in ("name", "parameters", "valid_perplexity", "train_seconds")}))


if __name__ == "__main__":
    main()
