"""Megatron checkpoints of every layout read back into the same weights and the same logits."""

import argparse

import pytest
import torch

from glotta.core.megatron import checkpoint as ckpt
from glotta.modeling.megatron_hf import megatron_state, save_checkpoint, to_hf
from glotta.modeling.megatron_reader import CheckpointError, read
from glotta.training.local_trainer import build_model
from glotta.training.megatron_config import TrainConfig

CFG = TrainConfig(name="r", num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=32, vocab_size=304,
                  make_vocab_size_divisible_by=8, micro_batch_size=1, global_batch_size=1, lr=1e-3, min_lr=1e-4,
                  train_samples=1, init_method_std=0.2)


def distinct_weights_model(cfg: TrainConfig, seed: int):
    """A model of the local trainer's architecture in which no tensor equals another (biases and norms would start
    at 0 / 1), so a tensor read into the wrong place shows."""
    model = build_model(cfg, seed).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def reference():
    return distinct_weights_model(CFG, 3)


def _args(tp: int, pp: int, model=None) -> argparse.Namespace:
    c = model.config if model is not None else None
    return argparse.Namespace(num_layers=c.n_layer if c else 4, hidden_size=c.n_embd if c else 64,
                              num_attention_heads=c.n_head if c else 4, padded_vocab_size=c.vocab_size if c else 304,
                              max_position_embeddings=c.n_positions if c else 32, tensor_model_parallel_size=tp,
                              pipeline_model_parallel_size=pp)


def _shard_legacy(reference, tp: int, version: float) -> list[dict]:
    """The reference model as Megatron legacy TP shards with the QKV row order of `version`."""
    lm = megatron_state(reference)["language_model"]
    heads = reference.config.n_head
    hn = reference.config.n_embd // heads
    out = []
    for r in range(tp):
        enc = {}
        for key, w in lm["encoder"].items():
            if "query_key_value" in key:
                per_head = w.reshape(heads, 3, hn, *w.shape[1:])[r * heads // tp:(r + 1) * heads // tp]
                if version < 1.0:
                    per_head = per_head.transpose(0, 1)  # [3, np, hn]
                elif version < 2.0:
                    per_head = per_head.transpose(1, 2)  # [np, hn, 3]
                enc[key] = per_head.reshape(-1, *w.shape[1:]).clone()
            elif "dense_h_to_4h" in key:
                enc[key] = w.chunk(tp, 0)[r].clone()
            elif key.endswith(("self_attention.dense.weight", "dense_4h_to_h.weight")):
                enc[key] = w.chunk(tp, 1)[r].clone()
            else:
                enc[key] = w.clone()
        emb = {"word_embeddings": {"weight": lm["embedding"]["word_embeddings"]["weight"].chunk(tp, 0)[r].clone()},
               "position_embeddings": {"weight": lm["embedding"]["position_embeddings"]["weight"].clone()}}
        out.append({"args": _args(tp, 1, reference), "checkpoint_version": version, "iteration": 7,
                    "model": {"language_model": {"embedding": emb, "encoder": enc}}})
    return out


def _write(tmp_path, shards: dict) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, state in shards.items():
        (tmp_path / "iter_0000007" / name).mkdir(parents=True)
        torch.save(state, tmp_path / "iter_0000007" / name / "model_optim_rng.pt")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")


def _check(tmp_path, reference):
    ck = read(tmp_path)
    merged = ck.merged
    model = to_hf(ck)
    ids = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
    for i, block in enumerate(reference.transformer.h):  # merged weights equal the original ones
        assert torch.equal(merged[(i, "fc1_w")], block.mlp.c_fc.weight.T)
        assert torch.equal(merged[(i, "proj_w")], block.attn.c_proj.weight.T)
    return ck


def test_local_trainer_checkpoint(tmp_path, reference):
    save_checkpoint(tmp_path, 7, reference, _args(1, 1), {}, {}, {})
    assert _check(tmp_path, reference).version == 3.0


@pytest.mark.parametrize("version", [0, 1.0, 2.0, 3.0])
def test_legacy_tp2_every_qkv_order(tmp_path, reference, version):
    shards = _shard_legacy(reference, 2, version)
    _write(tmp_path, {f"mp_rank_{r:02d}": s for r, s in enumerate(shards)})
    assert _check(tmp_path, reference).tp == 2


def test_core_layout_tp2_pp2_with_fused_norms(tmp_path, reference):
    legacy = _shard_legacy(reference, 2, 3.0)
    names = {"self_attention.query_key_value": "self_attention.linear_qkv",
             "self_attention.dense": "self_attention.linear_proj", "mlp.dense_h_to_4h": "mlp.linear_fc1",
             "mlp.dense_4h_to_h": "mlp.linear_fc2", "input_layernorm": "self_attention.linear_qkv.layer_norm",
             "post_attention_layernorm": "mlp.linear_fc1.layer_norm"}
    shards = {}
    for t, state in enumerate(legacy):
        lm = state["model"]["language_model"]
        for p in range(2):
            core = {}
            for key, w in lm["encoder"].items():
                if key.startswith("final_layernorm"):
                    if p == 1:
                        core["decoder." + key] = w
                    continue
                layer, rest = int(key.split(".")[1]), ".".join(key.split(".")[2:])
                if layer // 2 != p:
                    continue
                for old, new in names.items():
                    if rest.startswith(old + "."):
                        suffix = rest[len(old) + 1:]
                        if new.endswith("layer_norm"):
                            suffix = {"weight": "_weight", "bias": "_bias"}[suffix]
                            core[f"decoder.layers.{layer % 2}.{new}{suffix}"] = w
                        else:
                            core[f"decoder.layers.{layer % 2}.{new}.{suffix}"] = w
            if p == 0:
                core["embedding.word_embeddings.weight"] = lm["embedding"]["word_embeddings"]["weight"]
                core["embedding.position_embeddings.weight"] = lm["embedding"]["position_embeddings"]["weight"]
            shards[f"mp_rank_{t:02d}_{p:03d}"] = {"args": _args(2, 2), "checkpoint_version": 3.0, "model": core}
    _write(tmp_path, shards)
    ck = _check(tmp_path, reference)
    assert (ck.tp, ck.pp) == (2, 2)


def test_vocab_padding_removed_and_errors(tmp_path, reference):
    save_checkpoint(tmp_path / "a", 7, reference, _args(1, 1), {}, {}, {})
    ck = read(tmp_path / "a", vocab_size=100)
    merged = ck.merged
    assert merged["wte"].shape[0] == 100 and to_hf(ck).config.vocab_size == 100
    with pytest.raises(CheckpointError, match="mp_rank"):
        read(tmp_path / "empty")
    state = ckpt.load(ckpt.latest(tmp_path / "a"))
    del state["model"]["language_model"]["encoder"]["layers.2.mlp.dense_4h_to_h.bias"]
    _write(tmp_path / "b", {"mp_rank_00": state})
    with pytest.raises(CheckpointError, match="layer 2 lacks"):
        read(tmp_path / "b")


def test_cli_export_hf_and_onnx_then_serve_greedy_equal(tmp_path, reference):
    import asyncio
    import subprocess
    import sys

    from transformers import GPT2LMHeadModel

    from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions
    from glotta.server.engine.onnx_engine import OnnxEngine

    # a tokenizer of 300 tokens under the checkpoint's padded 304
    from glotta.training.tokenizer_training import train_bpe


    tok = tmp_path / "tok"
    train_bpe(["le noyau linux démarre vite " * 50, "la commande apt installe " * 50], 300, tok, show_progress=False)
    save_checkpoint(tmp_path / "ck", 7, reference, _args(1, 1), {}, {}, {})
    run = lambda *a: subprocess.run([sys.executable, "-m", "glotta.cli", "export", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("hf", str(tmp_path / "ck"), "--output", str(tmp_path / "hf"), "--tokenizer", str(tok))
    assert r.returncode == 0, r.stderr
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    vocab = hf.config.vocab_size  # the tokenizer's: Megatron's padding rows are gone
    assert vocab <= 300
    ids = torch.randint(0, vocab, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, reference(ids).logits[..., :vocab], rtol=0, atol=1e-5)
    r = run("onnx", str(tmp_path / "ck"), "--output", str(tmp_path / "repo" / "ck-model"), "--tokenizer", str(tok))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "repo" / "ck-model" / "config.pbtxt").is_file()

    async def greedy():
        engine = OnnxEngine(tmp_path / "repo" / "ck-model", threads=1)
        await engine.start()
        out = []
        req = GenerationRequest("le noyau", 12, SamplingParams(top_k=1), StopConditions(stop_on_eod=False))
        async for c in engine.generate(req):
            out += c.token_ids
        await engine.stop()
        return out, engine.tokenizer.encode("le noyau")

    got, prompt = asyncio.run(greedy())
    cfg = hf.generation_config
    cfg.eos_token_id, cfg.pad_token_id, cfg.do_sample, cfg.max_new_tokens = None, 0, False, 12
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           generation_config=cfg)[0, len(prompt):].tolist()
    assert got == want
