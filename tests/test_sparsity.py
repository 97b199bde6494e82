"""2:4 structured sparsity: pruning, the verifier on checkpoints and ONNX files, perplexity before/after."""

import argparse
import subprocess
import sys

import numpy as np
import pytest
import torch

from glotta.core.megatron.indexed import DatasetWriter
from glotta.export.sparsity import check, hf_matrices, prune_24, sparsify_hf, verify_path
from glotta.modeling.megatron_hf import save_checkpoint
from glotta.training.local_trainer import build_model
from glotta.training.megatron_config import TrainConfig

CFG = TrainConfig(name="s", num_layers=2, hidden_size=64, num_attention_heads=2, seq_length=32, vocab_size=96,
                  make_vocab_size_divisible_by=8, micro_batch_size=1, global_batch_size=1, lr=1e-3, min_lr=1e-4,
                  train_samples=1)


def test_prune_keeps_the_two_largest_of_each_group():
    w = torch.tensor([[1.0, -5.0, 0.5, 3.0], [0.1, 0.2, -0.3, 0.05]]).T  # groups along dim 0
    p = prune_24(w, 0)
    assert p[:, 0].tolist() == [0.0, -5.0, 0.0, 3.0]
    assert p[:, 1].tolist() == pytest.approx([0.0, 0.2, -0.3, 0.0])
    dense = np.random.default_rng(0).normal(size=(64, 16))
    assert not check({"w": (dense, 0)}).ok
    r = check({"w": (prune_24(torch.from_numpy(dense), 0).numpy(), 0)})
    assert r.ok and r.zero_fraction == 0.5


def _args():
    return argparse.Namespace(num_layers=2, hidden_size=64, num_attention_heads=2, padded_vocab_size=96,
                              max_position_embeddings=32)


def test_verifier_on_checkpoints_and_onnx(tmp_path):
    from glotta.export.onnx_export import export_gpt2_onnx

    model = build_model(CFG, 0).eval()
    save_checkpoint(tmp_path / "dense", 1, model, _args(), {}, {}, {})
    assert not verify_path(tmp_path / "dense").ok
    sparsify_hf(model)
    assert check(hf_matrices(model)).ok
    save_checkpoint(tmp_path / "sparse", 1, model, _args(), {}, {}, {})
    r = verify_path(tmp_path / "sparse")
    assert r.ok and r.tensors == 8 and r.zero_fraction == pytest.approx(0.5)
    onnx_path = export_gpt2_onnx(model, tmp_path / "onnx" / "model.onnx")
    assert verify_path(onnx_path).ok and verify_path(onnx_path).tensors >= 8
    dense_onnx = export_gpt2_onnx(build_model(CFG, 0).eval(), tmp_path / "onnx-dense" / "model.onnx")
    assert not verify_path(dense_onnx).ok


def test_cli_sparsify_reports_perplexity_and_verify(tmp_path):
    model = build_model(CFG, 0).eval()
    save_checkpoint(tmp_path / "ck", 1, model, _args(), {}, {}, {})
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "valid_text_document", 96)
    for _ in range(20):
        w.add_document(rng.integers(1, 96, 50).tolist() + [0])
    w.finalize()
    run = lambda *a: subprocess.run([sys.executable, "-m", "glotta.cli", "export", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("sparsify", str(tmp_path / "ck"), "--output", str(tmp_path / "sp"), "--data-path",
            str(tmp_path / "valid_text_document"), "--seq-length", "32")
    assert r.returncode == 0, r.stderr
    assert "pruned 8 matrices" in r.stdout and "dense →" in r.stdout.replace("\n", " ")
    assert run("verify-24", str(tmp_path / "sp")).returncode == 0
    bad = run("verify-24", str(tmp_path / "ck"))
    assert bad.returncode == 1 and "not 2:4 sparse" in bad.stdout
