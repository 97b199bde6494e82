"""Qwen2, the third family, through the Megatron side: a checkpoint with Megatron's Llama options plus
`--add-qkv-bias` reads back to the Hugging Face model's own logits, exports to a Hugging Face folder and to a served
ONNX folder equal to HF `generate`, writes TensorRT-LLM's Qwen build (examples/qwen), and FasterTransformer refuses
it with the reason."""

import argparse
import json
import subprocess
import sys

import pytest
import torch

from glotta.modeling.megatron_hf import save_checkpoint, to_hf
from glotta.modeling.megatron_reader import read
from glotta.server.engine.onnx_engine import OnnxEngine

from .conftest import engine_greedy
from .hf_folders import PROMPTS, hf_folder, hf_generate


def _glotta(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glotta.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def qwen_checkpoint(tmp_path_factory):
    """A Hugging Face Qwen2 (q/k/v biases, tied head, grouped KV heads) saved as a megatron-core checkpoint with the
    arguments Megatron-LM trains such a model with."""
    root = tmp_path_factory.mktemp("qwen2")
    folder, model, tok = hf_folder("qwen2", root / "hf")
    c = model.config
    args = argparse.Namespace(num_layers=c.num_hidden_layers, hidden_size=c.hidden_size,
                              num_attention_heads=c.num_attention_heads, ffn_hidden_size=c.intermediate_size,
                              group_query_attention=True, num_query_groups=c.num_key_value_heads,
                              padded_vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings,
                              seq_length=128, position_embedding_type="rope", rotary_base=int(1e6),
                              normalization="RMSNorm", norm_epsilon=c.rms_norm_eps, swiglu=True,
                              add_bias_linear=False, add_qkv_bias=True,
                              untie_embeddings_and_output_weights=False, tensor_model_parallel_size=1,
                              pipeline_model_parallel_size=1)
    save_checkpoint(root / "ck", 1, model, args, {}, {}, {})
    return root / "ck", folder, model


def test_megatron_qwen2_reads_back_to_its_own_logits(qwen_checkpoint):
    ck, _, model = qwen_checkpoint
    read_back = read(ck)
    a = read_back.architecture
    assert read_back.family == "qwen2" and a.qkv_bias and not a.out_bias and a.tied_embeddings
    ids = torch.tensor([[5, 77, 300, 12, 650, 9]])
    with torch.no_grad():
        torch.testing.assert_close(to_hf(read_back)(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_qwen2_exports_hf_and_onnx_equal_to_generate(qwen_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    ck, folder, model = qwen_checkpoint
    r = _glotta("export", "hf", str(ck), "--output", str(tmp_path / "hf"), "--tokenizer", str(folder))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["tie_word_embeddings"]
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    r = _glotta("export", "onnx", str(ck), "--output", str(tmp_path / "served"), "--tokenizer", str(folder))
    assert r.returncode == 0, r.stderr
    engine = OnnxEngine(tmp_path / "served", threads=1)
    for prompt, (ids, _) in zip(PROMPTS, engine_greedy(engine, PROMPTS, 12)):
        prompt_ids = engine.tokenizer.encode(prompt, special=True)
        assert ids == hf_generate(exported, prompt_ids, 12)[:len(ids)] == hf_generate(model, prompt_ids, 12)[:len(ids)]


def test_qwen2_trtllm_build_and_fastertransformer_refusal(qwen_checkpoint, tmp_path):
    """TensorRT-LLM converts Qwen2 with QWenForCausalLM (tensorrt_llm/models/qwen/model.py): build.sh
    names that class; FasterTransformer's GPT cannot run it and says why."""
    ck, folder, _ = qwen_checkpoint
    r = _glotta("export", "trtllm", str(ck), "--output", str(tmp_path / "trt"), "--tokenizer", str(folder),
                "--precision", "int8", "--max-input-len", "16", "--max-seq-len", "32")
    assert r.returncode == 0, r.stderr
    hf = json.loads((tmp_path / "trt" / "hf-qwen2" / "config.json").read_text())
    assert hf["architectures"] == ["Qwen2ForCausalLM"] and hf["model_type"] == "qwen2"  # TRT-LLM's qwen_type
    script = (tmp_path / "trt" / "build.sh").read_text()
    convert = next(line for line in script.splitlines() if "-m glotta.export.trtllm_convert" in line).split()
    assert convert[convert.index("--model") + 1] == "QWenForCausalLM" and "--option" not in convert
    assert subprocess.run(["bash", "-n", str(tmp_path / "trt" / "build.sh")]).returncode == 0
    r = _glotta("export", "fastertransformer", str(ck), "--output", str(tmp_path / "ft"), "--tokenizer", str(folder))
    assert r.returncode == 2 and "no RoPE, RMSNorm, SwiGLU" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ft").exists()
