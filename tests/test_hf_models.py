"""Hugging Face folders served as they are: GPT-2 and Llama (RoPE with scaling, SwiGLU, RMSNorm, grouped KV heads,
untied head), built here with random peaked weights, against transformers on the same weights."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from glotta.core.errors import GlottaError
from glotta.modeling.hf_folder import cached_hf_model, convert_hf_folder, is_hf_folder, read_safetensors
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.server.triton.launcher import TritonServer

from .conftest import FR, REPO, Gateway, assert_hf_parity, engine_greedy, free_port, hf_greedy
from .hf_folders import peak

PROMPTS = ["Il était une fois", "Debian est une distribution libre", "Le", "Pour configurer le réseau, éditez"]
TOKENIZER = REPO / FR / "tokenizer.json"  # ids 0 = <|endoftext|>


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(TOKENIZER, path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=8192, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
                     eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    peak(model, 0.3)
    return _save(model, tmp_path_factory.mktemp("hf") / "tiny-gpt2"), model


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=8192, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rope_theta=50000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg).eval()
    peak(model, 0.25)
    return _save(model, tmp_path_factory.mktemp("hf") / "tiny-llama"), model


@pytest.mark.parametrize("which", ["hf_gpt2", "hf_llama"])
def test_hf_folder_serves_like_transformers(request, tmp_path, monkeypatch, which):
    src, model = request.getfixturevalue(which)
    monkeypatch.setenv("GLOTTA_CACHE", str(tmp_path / "cache"))
    assert is_hf_folder(src)
    served = cached_hf_model(src)
    assert served.is_relative_to(tmp_path / "cache") and cached_hf_model(src) == served  # converted once
    meta = json.loads((served / "glotta.json").read_text())
    assert meta["family"] == which.removeprefix("hf_") and meta["tokenizer"]["eos_tokens"] == ["<|endoftext|>"]
    engine = OnnxEngine(served, threads=1)
    results = engine_greedy(engine, PROMPTS, 24)
    assert_hf_parity(model, engine.tokenizer, PROMPTS, results, 24, min_distinct=15)


def test_llama_bf16_weights_and_int8(hf_llama, tmp_path, monkeypatch):
    """A bfloat16 checkpoint (what Llama-family models ship) reads as the same weights rounded; INT8 serves it."""
    src, model = hf_llama
    half = copy.deepcopy(model).to(torch.bfloat16)
    bf16 = _save(half, tmp_path / "bf16")
    tensors = read_safetensors(bf16 / "model.safetensors")
    w = half.model.layers[0].self_attn.k_proj.weight.detach().float().numpy()
    np.testing.assert_array_equal(tensors["model.layers.0.self_attn.k_proj.weight"], w)
    monkeypatch.setenv("GLOTTA_CACHE", str(tmp_path / "cache"))
    out = convert_hf_folder(bf16, tmp_path / "repo" / "llama-bf16")
    (ids, _), *_ = engine_greedy(OnnxEngine(out, threads=1, precision="int8"), PROMPTS, 8)
    assert len(ids) == 8


def test_unsupported_architecture_names_the_supported_ones(hf_gpt2, tmp_path):
    src, _ = hf_gpt2
    other = tmp_path / "bert"
    shutil.copytree(src, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(GlottaError, match="GPT2LMHeadModel, LlamaForCausalLM"):
        convert_hf_folder(other, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_llama_folder_through_export_and_triton(hf_llama, tmp_path):
    """`glotta export onnx HF_DIR --output REPO/NAME` writes a folder Triton serves; greedy text over HTTP equals
    HF generate's."""
    import subprocess
    import sys

    import httpx

    src, model = hf_llama
    repo = tmp_path / "repo"
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "onnx", str(src), "--output",
                        str(repo / "tiny-llama")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    server = TritonServer(repo, ["tiny-llama"], free_port(), free_port(), free_port(), workdir=tmp_path / "t").start()
    gw = Gateway(["--model", "tiny-llama", "--triton-url", server.grpc_url], tmp_path / "serve.log",
                 env={"GLOTTA_MODEL_REPOSITORY": str(repo)})
    try:
        from glotta.modeling.model_folder import ModelFolder

        tok = ModelFolder.open(repo / "tiny-llama").tokenizer()
        for prompt in PROMPTS[:2]:
            body = {"prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
            text = httpx.post(gw.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
            assert text == tok.decode(hf_greedy(model, tok.encode(prompt), 16), skip_special=True)
    finally:
        gw.stop()
        server.stop()
