"""The demo-model recipe runs the whole pipeline (prepare → tokenizer → convert → train local → export) and the
model folder it writes is one the CPU engine serves, with the trained weights."""

import gzip
import json
import random

import numpy as np
import torch

from glotta.cli import demo_models
from tests.test_data_prep import FR, _doc


def test_demo_recipe_end_to_end(tmp_path, capsys):
    rng = random.Random(3)
    docs = [{"text": _doc(rng, FR, 8)} for _ in range(80)] + [{"text": "court"}]
    docs.append(dict(docs[0]))  # an exact duplicate for the dedup stage
    with gzip.open(tmp_path / "fr.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    out = tmp_path / "glotta-xx-tiny"
    demo_models.main(["--input", str(tmp_path / "fr.jsonl.gz"), "--lang", "fr", "--output", str(out), "--work",
                      str(tmp_path / "work"), "--train-samples", "24", "--vocab-size", "400",
                      "--valid-fraction", "0.2"])
    spec = json.loads((out / "glotta.json").read_text())
    meta = {**spec["card"], "vocab_size": spec["architecture"]["vocab_size"]}
    stages = meta["data_preparation"]["stages"]
    assert stages["clean"]["removed"] == {"too_short": 1} and stages["dedup"]["removed"] == {"exact_duplicate": 1}
    assert meta["train_documents"] + meta["valid_documents"] == 81 - 1 and meta["valid_documents"] > 0
    assert meta["train_steps"] == 3 and np.isfinite(meta["valid_perplexity"]) and meta["vocab_size"] <= 400
    assert (tmp_path / "work" / "checkpoints" / "iter_0000003" / "mp_rank_00" / "model_optim_rng.pt").is_file()
    for name in ("1/model.onnx", "1/model.py", "config.pbtxt", "tokenizer.json", "README.md", "loss.png"):
        assert (out / name).is_file(), name
    assert f"**{meta['valid_perplexity']}**" in (out / "README.md").read_text()
    # the served ONNX holds the checkpoint's weights (fp16-rounded)
    from glotta.modeling.megatron_hf import to_hf
    from glotta.modeling.megatron_reader import read
    from glotta.server.engine.onnx_model import OnnxCausalLM

    model = to_hf(read(tmp_path / "work" / "checkpoints", meta["vocab_size"]))
    ids = [5, 60, 200, 17, 3]
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
        want = model(torch.tensor([ids])).logits[0, -1].numpy()
    logits, _ = OnnxCausalLM(out / "1" / "model.onnx").prefill([ids], 0)
    np.testing.assert_allclose(logits[0, -1], want, atol=1e-3)
    # rerunning finds every step done: no step runs again (the trainer resumes at its last step), only the export
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*") if p.is_file() and "checkpoints" in
            p.parts or p.suffix in (".bin", ".idx") or p.name in ("tokenizer.json", "stats.json", "split.json")}
    capsys.readouterr()
    demo_models.main(["--input", str(tmp_path / "fr.jsonl.gz"), "--lang", "fr", "--output", str(out), "--work",
                      str(tmp_path / "work"), "--train-samples", "24", "--vocab-size", "400",
                      "--valid-fraction", "0.2"])
    assert json.loads((out / "glotta.json").read_text())["card"]["valid_perplexity"] == meta["valid_perplexity"]
    said = capsys.readouterr().out
    for step in ("$ glotta data prepare", "$ glotta tokenizer train", "$ glotta data convert"):
        assert step not in said, step
    assert "nothing to do" in said  # `glotta train local` found its last step done
    assert kept and not [p.name for p, t in kept.items() if p.stat().st_mtime_ns != t]
