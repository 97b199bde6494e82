"""Llama-style Megatron checkpoints (RoPE, RMSNorm, SwiGLU, grouped KV heads, untied output layer, no biases):
megatron-core's own model read back to its own logits at TP 1 and 2, the legacy names, and a `demo-tiny-llama` run
of the local trainer going train → export hf / onnx / trtllm → serve, FasterTransformer refusing it."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glotta.core.megatron.checkpoint import load
from glotta.core.net import free_port
from glotta.core.tokenizer import Tokenizer
from glotta.modeling.hf_folder import cached_hf_model
from glotta.modeling.megatron_hf import to_hf
from glotta.modeling.megatron_reader import CheckpointError, read
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.training.megatron_config import ConfigError, validate
from glotta.training.megatron_config import load as load_config

from .conftest import assert_hf_parity, engine_greedy
from .megatron_core_llama import PROMPT

HERE = Path(__file__).parent
PROMPTS = ["Le chat dort", "El perro", "Le canapé est", "duerme en el sofá"]


def _glotta(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glotta.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", params=[1, 2], ids=["tp1", "tp2"])
def mcore(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mcore-tp{request.param}")
    r = subprocess.run([sys.executable, str(HERE / "megatron_core_llama.py"), str(request.param), str(out),
                        str(free_port())], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return out, request.param


def test_megatron_core_llama_reads_back_to_its_own_logits(mcore):
    path, tp = mcore
    ck = read(path)
    a = ck.architecture
    assert (ck.family, ck.tp, a.n_head, a.n_kv_head, a.intermediate_size, a.tied_embeddings) == ("llama", tp, 4, 2, 96,
                                                                                                  False)
    model = to_hf(ck)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == 2
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0]
    torch.testing.assert_close(logits, torch.load(path / "reference_logits.pt"), atol=1e-4, rtol=1e-4)


def _as_legacy(state: dict) -> dict:
    """A megatron-core rank file under the legacy model's names (input_norm, query_key_value, post_attention_norm,
    dense_h_to_4h, final_norm, output_layer), as Megatron-LM's legacy GPT with RMSNorm saves them."""
    core = {"input_layernorm.weight": "input_norm.weight",
            "self_attention.linear_qkv.weight": "self_attention.query_key_value.weight",
            "self_attention.linear_proj.weight": "self_attention.dense.weight",
            "pre_mlp_layernorm.weight": "post_attention_norm.weight",
            "mlp.linear_fc1.weight": "mlp.dense_h_to_4h.weight", "mlp.linear_fc2.weight": "mlp.dense_4h_to_h.weight"}
    model = state["model"]
    enc = {"final_norm.weight": model["decoder.final_layernorm.weight"]}
    for key, value in model.items():
        if key.startswith("decoder.layers."):
            i, name = key[len("decoder.layers."):].split(".", 1)
            enc[f"layers.{i}.{core[name]}"] = value
    lm = {"embedding": {"word_embeddings": {"weight": model["embedding.word_embeddings.weight"]}},
          "encoder": enc, "output_layer": {"weight": model["output_layer.weight"]}}
    return {**state, "model": {"language_model": lm}}


def test_legacy_names_read_the_same_weights(mcore, tmp_path):
    path, _ = mcore
    for f in path.glob("iter_*/mp_rank_*/model_optim_rng.pt"):
        dest = tmp_path / f.relative_to(path)
        dest.parent.mkdir(parents=True)
        torch.save(_as_legacy(load(f)), dest)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    core = read(path).merged
    legacy_ck = read(tmp_path)
    legacy = legacy_ck.merged
    assert legacy_ck.family == "llama" and core.keys() == legacy.keys()
    for key in core:
        assert torch.equal(core[key], legacy[key]), key


def test_a_mixture_of_the_two_families_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="describe none of the families"):
        validate(load_config("demo-tiny", {"swiglu": True}), 1, 1)
    cfg = load_config("demo-tiny-llama", {"num_query_groups": 3})
    with pytest.raises(ConfigError, match="not divisible by 3 query groups"):
        validate(cfg, 1, 1)
    args = argparse.Namespace(num_layers=1, hidden_size=8, num_attention_heads=2, padded_vocab_size=16,
                              max_position_embeddings=8, position_embedding_type="rope", normalization="LayerNorm")
    (tmp_path / "iter_0000001" / "mp_rank_00").mkdir(parents=True)
    torch.save({"args": args, "model": {}}, tmp_path / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    with pytest.raises(CheckpointError, match="--position-embedding-type rope, --normalization LayerNorm"):
        read(tmp_path)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """`glotta train local` on a shrunk demo-tiny-llama (peaked initialisation: greedy choices far from ties)."""
    from glotta.core.megatron.indexed import DatasetWriter
    from glotta.training.tokenizer_training import train_bpe

    d = tmp_path_factory.mktemp("llama-run")
    texts = ["Le chat dort sur le canapé.", "El perro duerme en el sofá.", "Le chien mange.", "La casa es grande."]
    train_bpe(texts * 20, 300, d / "tok", show_progress=False)
    tok = Tokenizer(d / "tok")
    w = DatasetWriter(d / "data_text_document", 300)
    for i in range(60):
        w.add_document(tok.encode(" ".join(texts[j % 4] for j in range(i, i + 5))) + [tok.eod_id])
    w.finalize()
    cfg = dict(preset="demo-tiny-llama", num_layers=2, hidden_size=128, num_attention_heads=4, num_query_groups=2,
               seq_length=32, max_position_embeddings=64, vocab_size=300, make_vocab_size_divisible_by=8,
               micro_batch_size=4, global_batch_size=4, train_samples=16, lr_warmup_samples=0, lr=1e-3,
               init_method_std=0.3, split="90,10,0")
    (d / "cfg.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
    r = _glotta("train", "local", str(d / "cfg.yaml"), "--data-path", str(d / "data_text_document"), "--save",
                str(d / "ck"), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    return d


def test_the_local_trainer_writes_megatron_cores_llama_layout(llama_run):
    state = load(next((llama_run / "ck").glob("iter_*/mp_rank_00/model_optim_rng.pt")))
    args = state["args"]
    assert (args.position_embedding_type, args.normalization, args.swiglu, args.add_bias_linear) == \
        ("rope", "RMSNorm", True, False)
    assert args.group_query_attention and args.num_query_groups == 2 and args.untie_embeddings_and_output_weights
    h, hn = 128, 32
    assert state["model"]["decoder.layers.0.self_attention.linear_qkv.weight"].shape == ((4 + 2 * 2) * hn, h)
    assert state["model"]["decoder.layers.0.mlp.linear_fc1.weight"].shape == (2 * args.ffn_hidden_size, h)
    assert "output_layer.weight" in state["model"] and not any("bias" in k for k in state["model"])


def test_train_export_hf_and_onnx_then_serve_equal_to_transformers(llama_run, tmp_path):
    from transformers import AutoModelForCausalLM

    ck, tok = llama_run / "ck", llama_run / "tok"
    r = _glotta("export", "hf", str(ck), "--output", str(tmp_path / "hf"), "--tokenizer", str(tok))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert cfg["eos_token_id"] == Tokenizer(tok).eod_id and not cfg["tie_word_embeddings"]
    r = _glotta("export", "onnx", str(ck), "--output", str(tmp_path / "served"), "--tokenizer", str(tok))
    assert r.returncode == 0, r.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    for folder in (cached_hf_model(tmp_path / "hf"), tmp_path / "served"):  # `glotta serve --model HF_DIR`, export
        results = engine_greedy(OnnxEngine(folder, threads=1), PROMPTS, 12)
        assert_hf_parity(model, Tokenizer(tok), PROMPTS, results, 12, 3)


def test_gpu_exports_trtllm_llama_path_and_fastertransformer_refusal(llama_run, tmp_path):
    ck, tok = llama_run / "ck", llama_run / "tok"
    r = _glotta("export", "fastertransformer", str(ck), "--output", str(tmp_path / "ft"), "--tokenizer", str(tok))
    assert r.returncode == 2 and "no RoPE, RMSNorm, SwiGLU" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ft").exists()
    r = _glotta("export", "trtllm", str(ck), "--output", str(tmp_path / "trt"), "--tokenizer", str(tok), "--tp", "2",
                "--precision", "int8", "--max-input-len", "16", "--max-seq-len", "32")
    assert r.returncode == 0, r.stderr
    hf = json.loads((tmp_path / "trt" / "hf-llama" / "config.json").read_text())
    assert hf["architectures"] == ["LlamaForCausalLM"] and hf["eos_token_id"] == Tokenizer(tok).eod_id
    script = (tmp_path / "trt" / "build.sh").read_text()
    convert = next(line for line in script.splitlines() if "-m glotta.export.trtllm_convert" in line).split()
    assert convert[convert.index("--model") + 1] == "LLaMAForCausalLM" and "--option" not in convert
    assert convert[convert.index("--weight-only") + 1] == "int8" and convert[convert.index("--tp") + 1] == "2"
    assert subprocess.run(["bash", "-n", str(tmp_path / "trt" / "build.sh")]).returncode == 0


def test_plans_count_grouped_kv_heads(llama_run):
    from glotta.export.plan import plan_checkpoint
    from glotta.training.local_trainer import build_model
    from glotta.training.megatron_launch import parameters

    cfg = load_config("demo-tiny-llama")
    assert parameters(cfg) == sum(p.numel() for p in build_model(cfg, 0).parameters())
    plan = plan_checkpoint(str(llama_run / "ck"))
    model = to_hf(read(llama_run / "ck"))
    assert plan.parameters == sum(p.numel() for p in model.parameters())
    assert plan.kv_bytes_per_token == 2 * 2 * 2 * 32 * 2  # K and V × 2 layers × 2 KV heads × 32 × fp16
    r = _glotta("train", "plan", "demo-tiny-llama", "--nodes", "1", "--gpus-per-node", "1", "--allow-any-head-size")
    assert r.returncode == 0 and "2 key/value heads" in r.stdout, r.stdout + r.stderr


def test_megatrons_rope_scaling_becomes_llama3_rope_scaling(mcore, tmp_path):
    """`--use-rope-scaling` (Megatron's Llama 3.1 frequencies, its fixed constants) reaches the Hugging Face config,
    whose RoPE then differs from the unscaled one."""
    path, _ = mcore
    for f in path.glob("iter_*/mp_rank_*/model_optim_rng.pt"):
        state = load(f)
        state["args"].use_rope_scaling, state["args"].rope_scaling_factor = True, 8.0
        (tmp_path / f.relative_to(path)).parent.mkdir(parents=True)
        torch.save(state, tmp_path / f.relative_to(path))
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    ck = read(tmp_path)
    assert ck.architecture.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    scaled = to_hf(ck)
    rope = getattr(scaled.config, "rope_parameters", None) or scaled.config.rope_scaling
    assert rope["rope_type"] == "llama3" and rope["factor"] == 8.0
    ids = torch.tensor([PROMPT * 3])
    with torch.no_grad():
        plain = to_hf(read(path))(ids).logits
        assert not torch.allclose(scaled(ids).logits, plain, atol=1e-3)


def test_megatron_launch_carries_the_llama_flags():
    """pretrain_gpt.py gets Megatron's own flags for the family (megatron/training/arguments.py names); the GPT preset's
    launch is unchanged by them."""
    from glotta.training.megatron_launch import pretrain_args

    args = pretrain_args(load_config("demo-tiny-llama"), ["d"], "v.json", "m.txt", "ck")
    flags = " ".join(args)
    for part in ("--position-embedding-type rope", "--normalization RMSNorm", "--swiglu",
                 "--group-query-attention --num-query-groups 2", "--untie-embeddings-and-output-weights",
                 "--disable-bias-linear"):
        assert part in flags
    gpt = " ".join(pretrain_args(load_config("demo-tiny"), ["d"], "v.json", "m.txt", "ck"))
    assert not any(f in gpt for f in ("rope", "RMSNorm", "swiglu", "query-groups", "untie", "disable-bias"))
