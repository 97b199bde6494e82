"""The local trainer: Megatron sampling, falling loss, Megatron checkpoint layout, exact resume, weight round trip."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from glotta.core.megatron import checkpoint as ckpt
from glotta.core.megatron.indexed import DatasetWriter
from glotta.modeling.megatron_hf import load_into, megatron_state, save_checkpoint
from glotta.training.local_trainer import build_model, lr_at, train
from glotta.training.megatron_config import TrainConfig

CFG = dict(name="t", num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=32, vocab_size=200,
           make_vocab_size_divisible_by=8, micro_batch_size=4, global_batch_size=8, lr=3e-3, min_lr=3e-4,
           lr_warmup_samples=16, train_samples=8 * 12, eval_interval=4, save_interval=4, precision="fp32",
           split="90,10,0", weight_decay=0.01)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Documents from a few repeated phrases (learnable), each ending in EOD (id 0)."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    phrases = [rng.integers(1, 200, rng.integers(3, 9)).tolist() for _ in range(6)]
    w = DatasetWriter(d / "toy_text_document", 200)
    for _ in range(120):
        doc = [t for _ in range(rng.integers(2, 8)) for t in phrases[rng.integers(0, 6)]]
        w.add_document(doc + [0])
    w.finalize()
    return str(d / "toy_text_document")


def test_loss_falls_and_checkpoints_have_megatrons_layout(dataset, tmp_path):
    cfg = TrainConfig(**CFG)
    losses = train(cfg, dataset, str(tmp_path / "ck"), progress=False)
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.8 * losses[0]
    assert (tmp_path / "ck" / "latest_checkpointed_iteration.txt").read_text() == "12"
    for it in (4, 8, 12):
        assert (tmp_path / "ck" / f"iter_{it:07d}" / "mp_rank_00" / "model_optim_rng.pt").is_file()
    state = ckpt.load(ckpt.latest(tmp_path / "ck"))
    assert state["checkpoint_version"] == 3.0 and state["iteration"] == 12
    assert state["args"].num_layers == 2 and state["args"].padded_vocab_size == 200
    lm = state["model"]["language_model"]
    assert lm["embedding"]["word_embeddings"]["weight"].shape == (200, 128)
    assert lm["encoder"]["layers.1.self_attention.query_key_value.weight"].shape == (384, 128)
    assert lm["encoder"]["layers.0.mlp.dense_h_to_4h.weight"].shape == (512, 128)
    assert (tmp_path / "ck" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_exactly(dataset, tmp_path):
    cfg = TrainConfig(**CFG)
    whole = train(cfg, dataset, str(tmp_path / "a"), progress=False)
    first = train(cfg, dataset, str(tmp_path / "b"), max_steps=5, progress=False)
    rest = train(cfg, dataset, str(tmp_path / "b"), progress=False)
    assert first + rest == whole  # bit-identical losses
    a = ckpt.load(ckpt.latest(tmp_path / "a"))["model"]["language_model"]["encoder"]
    b = ckpt.load(ckpt.latest(tmp_path / "b"))["model"]["language_model"]["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_megatron_weights_round_trip_and_qkv_order(tmp_path):
    cfg = TrainConfig(**CFG)
    model = build_model(cfg, 0).eval()
    lm = megatron_state(model)["language_model"]
    hn = 128 // 4
    qkv = lm["encoder"]["layers.0.self_attention.query_key_value.weight"]
    c_attn = model.transformer.h[0].attn.c_attn.weight  # [h, 3h]: q | k | v, heads inside each
    assert torch.equal(qkv[0:hn], c_attn[:, 0:hn].T)  # head 0: q
    assert torch.equal(qkv[hn:2 * hn], c_attn[:, 128:128 + hn].T)  # head 0: k
    assert torch.equal(qkv[3 * hn:4 * hn], c_attn[:, hn:2 * hn].T)  # head 1: q
    from glotta.training.local_trainer import megatron_args

    path = save_checkpoint(tmp_path, 3, model, megatron_args(cfg, 3), {}, {}, {})
    other = build_model(cfg, 1).eval()
    load_into(other, ckpt.load(path))  # through the file on disk
    ids = torch.randint(0, 200, (2, 16))
    with torch.no_grad():
        assert torch.equal(other(ids).logits, model(ids).logits)


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(**CFG)
    assert lr_at(cfg, 0) == 0 and lr_at(cfg, 8) == pytest.approx(cfg.lr / 2)
    assert lr_at(cfg, 16) == pytest.approx(cfg.lr) and lr_at(cfg, cfg.train_samples) == pytest.approx(cfg.min_lr)


def test_cli_local(dataset, tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("\n".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in CFG.items()))
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "train", "local", str(yaml), "--data-path",
                        dataset, "--save", str(tmp_path / "ck"), "--max-steps", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "2 steps" in r.stdout and (tmp_path / "ck" / "iter_0000002").is_dir()
