"""`glotta export plan`: the source talk's executive math."""

import subprocess
import sys

import pytest

from glotta.export.plan import dense_kv_bytes_per_token, min_tensor_parallel, weights_gib


def test_175b_in_fp16_is_the_talks_325_96_gb():
    w = weights_gib(175_000_000_000)
    assert round(w["fp16"], 2) == 325.96
    assert w["fp32"] == pytest.approx(2 * w["fp16"]) and w["int8"] == pytest.approx(w["fp16"] / 2)
    assert w["int8"] < w["fp16 2:4"] < w["fp16"]


def test_kv_cache_and_minimum_tp():
    assert dense_kv_bytes_per_token(96, 12288) == 2 * 96 * 12288 * 2
    assert min_tensor_parallel(325.96, 0, 80) == 8  # 325.96 / 8 = 40.7 GB ≤ 72 GB, / 4 = 81.5 GB is not
    assert min_tensor_parallel(325.96, 0, 141) == 4
    assert min_tensor_parallel(3.07, 0, 16) == 1
    assert min_tensor_parallel(1e6, 0, 16) is None


def test_cli_for_params_preset_and_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "plan", "--params", "175e9",
                        "--num-layers", "96", "--hidden-size", "12288"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "325.96" in r.stdout and "4.500 MiB per token" in r.stdout
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "plan", "meme-1.7b"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "1,650,461,184" in r.stdout
    from glotta.modeling.megatron_hf import save_checkpoint
    from glotta.training.local_trainer import build_model, megatron_args
    from glotta.training.megatron_config import load

    cfg = load("demo-tiny")
    model = build_model(cfg, 0)
    save_checkpoint(tmp_path, 1, model, megatron_args(cfg, 1), {}, {}, {})
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "plan", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    params = sum(p.numel() for p in model.parameters())
    assert r.returncode == 0 and f"{params:,}" in r.stdout
