"""FasterTransformer files, TensorRT preparation (profiles, 2:4 ONNX, Q/DQ INT8) and TensorRT-LLM commands."""

import configparser
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from glotta.core.tokenizer import Tokenizer
from glotta.export import fastertransformer as ft
from glotta.export import trtllm_convert
from glotta.export.sparsity import verify_path
from glotta.export.tensorrt import profiles, quantize_qdq
from glotta.export.trtllm import TrtllmPlan, commands, engine_features, validate
from glotta.modeling.megatron_hf import megatron_state, save_checkpoint
from glotta.modeling.megatron_reader import MegatronCheckpoint, read
from glotta.modeling.registry import get
from glotta.training.local_trainer import build_model
from glotta.training.megatron_config import TrainConfig
from tests.test_megatron_reader import _args, _shard_legacy, _write, distinct_weights_model

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "model_repository" / "glotta-fr-tiny"
GPT2 = get("gpt2").trtllm
# head size 32: one FasterTransformer / TRT-LLM can run; 4 heads so TP 2 → 1 and 1 → 2 both split
CFG = TrainConfig(name="ft", num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=32, vocab_size=300,
                  make_vocab_size_divisible_by=8, micro_batch_size=1, global_batch_size=1, lr=1e-3, min_lr=1e-4,
                  train_samples=1, init_method_std=0.2)


@pytest.fixture(scope="module")
def reference():
    return distinct_weights_model(CFG, 5)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A byte-level BPE of 300 tokens (the checkpoint's vocabulary) whose <|endoftext|> is id 0."""
    from glotta.training.tokenizer_training import train_bpe

    out = tmp_path_factory.mktemp("tokenizer")
    train_bpe(["Le chat dort sur le canapé.", "El perro duerme en el sofá."] * 20, 300, out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def tp2_checkpoint(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp("tp2")
    _write(path, {f"mp_rank_{r:02d}": s for r, s in enumerate(_shard_legacy(reference, 2, 3.0))})
    return path


def _ft_forward(folder: Path, ids: np.ndarray, n: int, layers: int, h: int, heads: int) -> np.ndarray:
    """GPT logits computed only from FasterTransformer's files, as its kernels read them: per-rank QKV [h, 3, h/n]
    head-major, [in, out] matrices, row-parallel partial sums added across ranks."""
    rd = lambda name, shape: ft.read_back(folder, name, shape).astype(np.float64)  # noqa: E731
    cfg = configparser.ConfigParser()
    cfg.read(folder / "config.ini")
    vocab, ffn, hn = int(cfg["gpt"]["vocab_size"]), int(cfg["gpt"]["inter_size"]), h // heads
    t = ids.shape[0]
    x = rd("model.wte", (vocab, h))[ids] + rd("model.wpe", (-1, h))[:t]

    def ln(v, name):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-5) * rd(name + ".weight", (h,)) + rd(name + ".bias", (h,))

    gelu = np.vectorize(lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))))
    causal = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(layers):
        p = f"model.layers.{i}."
        a = ln(x, p + "input_layernorm")
        attn = rd(p + "attention.dense.bias", (h,))
        for r in range(n):
            qkv = a @ rd(p + f"attention.query_key_value.weight.{r}", (h, 3 * h // n))
            qkv = (qkv + rd(p + f"attention.query_key_value.bias.{r}", (3 * h // n,))).reshape(t, 3, heads // n, hn)
            q, k, v = (qkv[:, j].transpose(1, 0, 2) for j in range(3))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hn) + causal
            w = np.exp(s - s.max(-1, keepdims=True))
            ctx = (w / w.sum(-1, keepdims=True)) @ v
            attn = attn + ctx.transpose(1, 0, 2).reshape(t, h // n) @ rd(p + f"attention.dense.weight.{r}", (h // n, h))
        x = x + attn
        m = ln(x, p + "post_attention_layernorm")
        mlp = rd(p + "mlp.dense_4h_to_h.bias", (h,))
        for r in range(n):
            up = m @ rd(p + f"mlp.dense_h_to_4h.weight.{r}", (h, ffn // n)) + rd(p + f"mlp.dense_h_to_4h.bias.{r}",
                                                                                 (ffn // n,))
            mlp = mlp + gelu(up) @ rd(p + f"mlp.dense_4h_to_h.weight.{r}", (ffn // n, h))
        x = x + mlp
    return ln(x, "model.final_layernorm") @ rd("model.wte", (vocab, h)).T


@pytest.mark.parametrize("infer_gpus", [1, 2])
def test_fastertransformer_files_compute_the_checkpoint_logits(tmp_path, reference, tp2_checkpoint, infer_gpus,
                                                             tokenizer):
    folder = ft.write(read(tp2_checkpoint), tmp_path, infer_gpus, tokenizer, "fp32")
    assert folder == tmp_path / f"{infer_gpus}-gpu" and not [p for p in tmp_path.iterdir() if p != folder]
    h, n = 128, infer_gpus
    expected = {"model.wpe", "model.wte", "model.final_layernorm.weight", "model.final_layernorm.bias"}
    for i in range(2):
        p = f"model.layers.{i}."
        expected |= {p + s for s in ("input_layernorm.weight", "input_layernorm.bias", "attention.dense.bias",
                                     "post_attention_layernorm.weight", "post_attention_layernorm.bias",
                                     "mlp.dense_4h_to_h.bias")}
        expected |= {p + f"{s}.{r}" for r in range(n) for s in (
            "attention.query_key_value.weight", "attention.query_key_value.bias", "attention.dense.weight",
            "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.weight")}
    assert {f.name[:-4] for f in folder.glob("*.bin")} == expected
    # a layer's QKV read back from the files equals the checkpoint's Q, K, V of each rank's heads
    lm = megatron_state(reference)["language_model"]["encoder"]
    megatron_qkv = lm["layers.1.self_attention.query_key_value.weight"].numpy().reshape(4, 3, 32, h)  # v3 rows
    for r in range(n):
        got = ft.read_back(folder, f"model.layers.1.attention.query_key_value.weight.{r}", (h, 3, 4 // n, 32))
        for j in range(3):  # q, k, v
            np.testing.assert_array_equal(got[:, j], megatron_qkv[r * 4 // n:(r + 1) * 4 // n, j].transpose(2, 0, 1))
    ids = np.array([5, 17, 250, 3, 99, 42, 7])
    with torch.no_grad():
        want = reference(torch.tensor(ids)[None]).logits[0].double().numpy()
    np.testing.assert_allclose(_ft_forward(folder, ids, n, 2, h, 4), want, atol=2e-4)
    ini = configparser.ConfigParser()
    ini.read(folder / "config.ini")
    g = ini["gpt"]
    assert (g["head_num"], g["size_per_head"], g["inter_size"], g["num_layer"], g["tensor_para_size"],
            g["weight_data_type"], g["vocab_size"]) == ("4", "32", "512", "2", str(n), "fp32", "304")
    assert "num_attention_heads:4\n" in (folder / "args.txt").read_text()


def test_exports_take_the_tokenizer_the_checkpoint_args_name(tmp_path, tp2_checkpoint, tokenizer):
    """No --tokenizer, none beside the checkpoint, but its Megatron args name --vocab-file / --merge-file that exist:
    FasterTransformer's start/end ids and the TRT-LLM folder's eos come from that tokenizer."""
    ck = tmp_path / "ck"
    shutil.copytree(tp2_checkpoint, ck)
    for f in ck.glob("*/mp_rank_*/model_optim_rng.pt"):
        state = torch.load(f, weights_only=False)
        state["args"].vocab_file, state["args"].merge_file = str(tokenizer / "vocab.json"), str(tokenizer / "merges.txt")
        torch.save(state, f)
    env = {**os.environ, "GLOTTA_CACHE": str(tmp_path / "cache")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "glotta.cli", "export", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env)
    r = run("fastertransformer", str(ck), "--output", str(tmp_path / "ft"), "--infer-gpus", "2")
    assert r.returncode == 0, r.stderr
    assert "--vocab-file" in r.stdout
    ini = (tmp_path / "ft" / "2-gpu" / "config.ini").read_text()
    assert "end_id = 0" in ini and "start_id = 0" in ini
    r = run("trtllm", str(ck), "--output", str(tmp_path / "trt"), "--max-input-len", "16", "--max-seq-len", "32")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "trt" / "hf-gpt2" / "config.json").read_text())
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == Tokenizer(tokenizer).eod_id
    assert (tmp_path / "trt" / "hf-gpt2" / "tokenizer.json").is_file()


def test_fastertransformer_cli_fp16_triton_folder_and_refusals(tmp_path, tp2_checkpoint, tokenizer):
    out = tmp_path / "glotta-x-ft-engine"
    run = lambda *a: subprocess.run([sys.executable, "-m", "glotta.cli", "export", *a],  # noqa: E731
                                    capture_output=True, text=True)
    r = run("fastertransformer", str(tp2_checkpoint), "--output", str(out), "--infer-gpus", "2", "--triton")
    assert r.returncode == 2 and "pass --tokenizer DIR" in r.stderr  # the end token is never guessed
    ft_args = ["--infer-gpus", "2", "--triton", "--tokenizer", str(tokenizer)]
    r = run("fastertransformer", str(tp2_checkpoint), "--output", str(out), *ft_args)
    assert r.returncode == 0, r.stderr
    ini = (out / "1" / "2-gpu" / "config.ini").read_text()
    assert "end_id = 0" in ini and "start_id = 0" in ini
    vocab = Tokenizer(tokenizer).vocab_size  # the tokenizer's size trims Megatron's padding (304 rows)
    wte = ft.read_back(out / "1" / "2-gpu", "model.wte", (vocab, 128))
    merged = read(tp2_checkpoint).merged
    assert wte.dtype == np.float16 and np.array_equal(wte, merged["wte"][:vocab].numpy().astype(np.float16))
    cfg = text_format.Parse((out / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.backend == "fastertransformer" and cfg.name == out.name
    assert cfg.parameters["tensor_para_size"].string_value == "2"
    assert "model_checkpoint_path" not in cfg.parameters  # the backend then reads <folder>/1/2-gpu
    r = run("fastertransformer", str(tp2_checkpoint), "--output", str(out), *ft_args)
    assert r.returncode == 2 and "exists" in r.stderr
    r = run("fastertransformer", str(tp2_checkpoint), "--output", str(tmp_path / "x"), "--infer-gpus", "3",
            "--tokenizer", str(tokenizer))
    assert r.returncode == 2 and "cannot be split over --infer-gpus 3" in r.stderr
    assert not (tmp_path / "x" / "3-gpu").exists()


def _gpt(hidden: int, heads: int, layers: int, vocab: int, positions: int) -> MegatronCheckpoint:
    """A checkpoint of the GPT family with only its shape (what the refusals look at)."""
    from dataclasses import replace

    arch = replace(get("gpt2").traits(), vocab_size=vocab, n_layer=layers, n_embd=hidden, n_head=heads,
                   n_kv_head=heads, n_positions=positions, intermediate_size=4 * hidden)
    return MegatronCheckpoint({}, "gpt2", arch, None)


def test_unsupported_head_size_is_refused_with_a_suggestion(tmp_path, tokenizer):
    shape = _gpt(hidden=2304, heads=32, layers=24, vocab=50304, positions=2048)
    with pytest.raises(ft.FTExportError, match=r"2304/32 = 72 .*24 heads \(head size 96\)"):
        ft.check_shape(shape, 2)
    with pytest.raises(ValueError, match="72 is not supported by TensorRT-LLM"):
        validate(TrtllmPlan(tmp_path, tmp_path, tmp_path, GPT2), shape)
    small = build_model(CFG.model_copy(update={"num_attention_heads": 8}), 0)  # head size 16
    save_checkpoint(tmp_path / "c", 1, small, _args(1, 1, small), {}, {}, {})
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "fastertransformer", str(tmp_path / "c"),
                        "--output", str(tmp_path / "o"), "--tokenizer", str(tokenizer)], capture_output=True, text=True)
    assert r.returncode == 2 and "head size 128/8 = 16" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_tensorrt_profiles_are_consistent_for_every_input_of_the_served_onnx():
    """Each of min / opt / max of each profile must be a shape set the graph can run: the attention mask is as long
    as past + new tokens, for the same batch (the graph concatenates past and new keys along the sequence)."""
    graph = onnx.load(str(TINY / "1" / "model.onnx"), load_external_data=False).graph
    prefill, decode = profiles(TINY / "1" / "model.onnx", max_batch=8, max_seq=128)
    for prof in (prefill, decode):
        assert set(prof) == {i.name for i in graph.input}
        for inp in graph.input:
            lo, opt, hi = prof[inp.name]
            assert len(lo) == len(opt) == len(hi) == len(inp.type.tensor_type.shape.dim)
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))
        for k in range(3):
            ids, mask, past = prof["input_ids"][k], prof["attention_mask"][k], prof["past_key_values.0.key"][k]
            assert ids[0] == mask[0] == past[0] and mask[1] == past[2] + ids[1], (k, ids, mask, past)
            assert mask[1] <= 128
    assert prefill["past_key_values.0.key"][2][2] == 0 and prefill["input_ids"][2][1] == 128  # a full prompt
    assert decode["input_ids"][2][1] == 1 and decode["past_key_values.0.key"][2][2] == 127  # a full context


def _next_token_logits(path: Path, ids: list[int]) -> np.ndarray:
    from glotta.server.engine.onnx_model import OnnxCausalLM

    return OnnxCausalLM(path).prefill([ids], 0)[0][0]


def test_sparse_and_qdq_onnx_for_tensorrt(tmp_path):
    from tokenizers import Tokenizer

    from glotta.export.sparsity import sparsify_onnx

    src = TINY / "1" / "model.onnx"
    assert not verify_path(src).ok
    assert sparsify_onnx(src, tmp_path / "sparse.onnx") == 16  # 4 layers × (qkv, proj, fc1, fc2)
    report = verify_path(tmp_path / "sparse.onnx")
    assert report.ok and report.zero_fraction >= 0.5
    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    calib = [tok.encode(t).ids for t in ("Le paquet est installé dans le système.", "La commande affiche l'aide.")]
    quantize_qdq(src, tmp_path / "qdq.onnx", calib)
    graph = onnx.load(str(tmp_path / "qdq.onnx")).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    mats = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    assert mats and all(produced_by[n.input[1]].op_type == "DequantizeLinear" for n in mats if n.input[1] in
                        produced_by)
    dq_weights = sum(produced_by.get(n.input[1]) is not None and produced_by[n.input[1]].op_type == "DequantizeLinear"
                     for n in mats)
    assert dq_weights >= 16
    ids = tok.encode("Pour installer le paquet, utilisez la commande").ids
    fp32, int8 = _next_token_logits(src, ids), _next_token_logits(tmp_path / "qdq.onnx", ids)
    agree = (fp32.argmax(-1) == int8.argmax(-1)).mean()
    assert agree >= 0.7, agree  # INT8 Q/DQ keeps most greedy choices of the fp32 model


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_cli_without_tensorrt_says_what_to_install(tmp_path):
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "tensorrt", str(TINY), "--output",
                        str(tmp_path / "m.plan"), "--precision", "int8-sparse"], capture_output=True, text=True)
    assert r.returncode == 2 and "TensorRT is not installed" in r.stderr and "pypi.nvidia.com" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m.plan").exists()


# The flags TensorRT-LLM v0.14 accepts, read from its argument parser: tensorrt_llm/commands/build.py
# (parse_arguments) — the release of the NGC 24.10 image.
BUILD_FLAGS = {"--checkpoint_dir", "--model_config", "--build_config", "--model_cls_file", "--model_cls_name",
               "--output_dir", "--max_batch_size", "--max_input_len", "--max_seq_len", "--max_beam_width",
               "--max_num_tokens", "--opt_num_tokens", "--max_prompt_embedding_table_size", "--kv_cache_type",
               "--paged_kv_cache", "--input_timing_cache", "--output_timing_cache", "--profiling_verbosity",
               "--strip_plan", "--weight_sparsity", "--weight_streaming", "--workers", "--log_level",
               "--enable_debug_output", "--visualize_network", "--dry_run", "--monitor_memory", "--logits_dtype",
               "--gather_context_logits", "--gather_generation_logits", "--gather_all_token_logits", "--lora_dir",
               "--lora_ckpt_source", "--lora_target_modules", "--max_lora_rank", "--speculative_decoding_mode",
               "--max_draft_len", "--auto_parallel", "--gpus_per_node", "--cluster_key", "--gemm_plugin",
               "--gpt_attention_plugin", "--context_fmha", "--remove_input_padding", "--tokens_per_block",
               "--use_paged_context_fmha", "--multiple_profiles", "--use_fused_mlp", "--reduce_fusion"}


def test_trtllm_commands_and_cli(tmp_path, tp2_checkpoint, tokenizer):
    plan = TrtllmPlan(tmp_path / "hf", tmp_path / "ck", tmp_path / "eng", GPT2, tp=2, precision="int8-sparse",
                      max_input_len=16, max_seq_len=32)
    shape = _gpt(hidden=128, heads=4, positions=32, layers=2, vocab=300)
    validate(plan, shape)
    convert, build = commands(plan)
    assert convert[:3] == ["${PYTHON}", "-m", "glotta.export.trtllm_convert"]  # TRT-LLM's Python API, no example
    assert convert[convert.index("--tp") + 1] == "2" and convert[convert.index("--model") + 1] == "GPTForCausalLM"
    assert convert[-2:] == ["--weight-only", "int8"] and "gpt_variant=gpt2" in convert
    assert build[0] == "trtllm-build" and "--weight_sparsity" in build
    assert build[build.index("--kv_cache_type") + 1] == "paged" and build[build.index("--max_seq_len") + 1] == "32"
    assert build[build.index("--use_paged_context_fmha") + 1] == "enable"  # KV-cache reuse needs it
    own = {o for a in trtllm_convert.parser()._actions for o in a.option_strings}
    for cmd, known in ((convert, own), (build, BUILD_FLAGS)):
        assert {a for a in cmd if a.startswith("--")} <= known, {a for a in cmd if a.startswith("--")} - known
    for bad, msg in ((dict(tp=3), "split over --tp 3"), (dict(max_seq_len=64), "exceeds the model's 32"),
                     (dict(precision="int8", smoothquant=True), "--calib-dataset"),
                     (dict(smoothquant=True), "with --precision int8"), (dict(int8_kv_cache=True), "--calib-dataset"),
                     (dict(int8_kv_cache=True, calib_dataset=str(tmp_path / "none.jsonl")), "no such file"),
                     (dict(precision="fp8"), "is not one of")):
        with pytest.raises(ValueError, match=msg):
            validate(TrtllmPlan(tmp_path, tmp_path, tmp_path, GPT2, **{"max_input_len": 16, "max_seq_len": 32, **bad}),
                     shape)
    out = tmp_path / "trtllm"
    base = [sys.executable, "-m", "glotta.cli", "export", "trtllm", str(tp2_checkpoint), "--output", str(out)]
    r = subprocess.run(base, capture_output=True, text=True)
    assert r.returncode == 2 and "pass --tokenizer DIR" in r.stderr  # its end id is never guessed
    r = subprocess.run([*base, "--tokenizer", str(tokenizer), "--tp", "2", "--precision", "int8", "--max-input-len",
                        "16", "--max-seq-len", "32", "--run"], capture_output=True, text=True)
    hf = out / "hf-gpt2"  # TRT-LLM v0.14 guesses the variant from the folder's name, and it is given explicitly too
    assert (hf / "model.safetensors").is_file() and (hf / "config.json").is_file()
    text = (out / "build.sh").read_text()
    assert "-m glotta.export.trtllm_convert --hf-dir" in text and "trtllm-build --checkpoint_dir" in text
    assert subprocess.run(["bash", "-n", str(out / "build.sh")]).returncode == 0
    if importlib.util.find_spec("tensorrt_llm") is None:
        assert r.returncode == 2 and "trtllm-build is not on PATH" in r.stderr
        env = {**os.environ, "PYTHON": sys.executable}
        missing = subprocess.run(["bash", str(out / "build.sh")], capture_output=True, text=True, env=env,
                                 cwd=tmp_path)
        assert missing.returncode == 2 and "cannot import tensorrt_llm" in missing.stderr  # says why, runs nothing


def _config(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _builder_accepts(build: list[str], kv_quant: str | None) -> str | None:
    """tensorrt_llm/builder.py `build` (v0.14 and since), the checks on the flags these commands set: with
    `use_paged_context_fmha`, an INT8 KV cache raises "Paged Context FMHA doesn't work with int8 kv cache currently."
    and an FP8 one outside the FP8 quantization workflow raises "FP8 Paged Context FMHA only works with fp8
    quantization workflow currently."; and commands/build.py's `--use_paged_context_fmha` needs `--context_fmha`."""
    flag = dict(zip(build, build[1:]))
    paged = flag.get("--use_paged_context_fmha") == "enable"
    if paged and kv_quant == "int8":
        return "Paged Context FMHA doesn't work with int8 kv cache currently."
    if paged and kv_quant == "fp8":
        return "FP8 Paged Context FMHA only works with fp8 quantization workflow currently."
    if paged and flag.get("--context_fmha") != "enable":
        return "paged context FMHA without context FMHA"
    return None


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8", "int4", "fp16-sparse", "int8-sparse"])
@pytest.mark.parametrize("int8_kv", [False, True])
def test_every_trtllm_build_passes_the_builders_checks_and_its_config_matches(tmp_path, precision, int8_kv):
    """Each precision, with and without the INT8 KV cache: trtllm-build's own checks accept the flags, and the Triton
    config says KV-cache reuse only where the engine has paged context FMHA (tensorrtllm_backend:
    enable_kv_cache_reuse needs it)."""
    from glotta.server.triton.config_writers.engines import engine_config

    plan = TrtllmPlan(tmp_path / "hf", tmp_path / "ck", tmp_path / "eng", GPT2, precision=precision,
                      int8_kv_cache=int8_kv, calib_dataset="x", max_input_len=16, max_seq_len=32)
    convert, build = commands(plan)
    assert _builder_accepts(build, "int8" if int8_kv else None) is None, build
    assert ("--int8-kv-cache" in convert) == int8_kv and ("--weight_sparsity" in build) == precision.endswith("sparse")
    features = engine_features(plan)
    assert features.kv_cache_reuse == (build[build.index("--use_paged_context_fmha") + 1] == "enable") != int8_kv
    config = engine_config("m-engine", "tensorrtllm-24.10", overrides=features.config_parameters())
    reuse = _config(config).parameters["enable_kv_cache_reuse"].string_value
    assert reuse == ("false" if int8_kv else "true")
    assert "dynamic_batching" in config  # as upstream's tensorrt_llm/config.pbtxt
    old = ["--context_fmha", "enable", "--use_paged_context_fmha", "enable"]  # what the export wrote before
    assert _builder_accepts(old, "int8") is not None  # the check above can fail


def test_trtllm_convert_calls_the_python_api_per_rank(tmp_path, monkeypatch):
    """The converter's calls, recorded by a stand-in `tensorrt_llm` package (the real one needs a GPU machine and
    runs in `make gpu-check`): one from_hugging_face + save_checkpoint per rank with a weight-only QuantConfig, and one
    calibrated quantize() for the INT8 KV cache, with the calibration folder and the family's options."""
    import types

    calls = []

    class Model:
        @classmethod
        def from_hugging_face(cls, path, dtype, mapping, quant_config, **options):
            calls.append(("from_hugging_face", path, dtype, mapping, quant_config, options))
            return cls()

        @classmethod
        def quantize(cls, path, out, dtype, mapping, quant_config, calib_dataset, **options):
            calls.append(("quantize", path, out, dtype, mapping, quant_config, calib_dataset, options))

        def save_checkpoint(self, out, save_config):
            calls.append(("save_checkpoint", out, save_config))

    root = types.ModuleType("tensorrt_llm")
    modules = {"tensorrt_llm": root, "tensorrt_llm.models": types.ModuleType("m"),
               "tensorrt_llm.mapping": types.ModuleType("m"), "tensorrt_llm.models.modeling_utils":
               types.ModuleType("m"), "tensorrt_llm.quantization": types.ModuleType("m")}
    modules["tensorrt_llm.models"].GPTForCausalLM = Model
    modules["tensorrt_llm.mapping"].Mapping = lambda **kw: kw
    modules["tensorrt_llm.models.modeling_utils"].QuantConfig = lambda **kw: kw
    modules["tensorrt_llm.quantization"].QuantAlgo = types.SimpleNamespace(W8A16="W8A16", INT8="INT8")
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    plan = TrtllmPlan(tmp_path / "hf", tmp_path / "ck", tmp_path / "eng", GPT2, tp=2, precision="int8")
    assert trtllm_convert.main(commands(plan)[0][3:]) == 0
    assert [c[0] for c in calls] == ["from_hugging_face", "save_checkpoint"] * 2
    assert calls[0][3] == {"world_size": 2, "rank": 0, "tp_size": 2, "pp_size": 1}
    assert calls[0][4] == {"quant_algo": "W8A16", "kv_cache_quant_algo": None}
    assert calls[0][5] == {"gpt_variant": "gpt2"} and calls[1][2] is True and calls[3][2] is False
    calls.clear()
    plan = TrtllmPlan(tmp_path / "hf", tmp_path / "ck", tmp_path / "eng", GPT2, tp=2, int8_kv_cache=True,
                      calib_dataset="x")
    assert trtllm_convert.main(commands(plan)[0][3:]) == 0
    (name, _, out, dtype, mapping, quant, calib, options), = calls
    assert name == "quantize" and quant == {"quant_algo": None, "kv_cache_quant_algo": "INT8"}
    assert calib == str(plan.calib_dir) and mapping == {"world_size": 2, "tp_size": 2, "pp_size": 1}


def test_an_engine_built_into_the_repository_updates_its_config_and_limits(tmp_path, tp2_checkpoint, tokenizer):
    """`--engine-dir REPO/NAME-engine/1`: the engine model's config gets this build's KV-reuse setting and the
    ensemble's glotta.json the build's limits, which the gateway then enforces (an over-long prompt is a 400)."""
    import asyncio

    from glotta.core.errors import ErrorKind, GlottaError
    from glotta.server.engine.interface import GenerationRequest
    from glotta.server.triton.triton_engine import TritonEngine

    from .conftest import REPO

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"Phrase numéro {i}."}) + "\n" for i in range(8)))
    repo = tmp_path / "repo"
    for name in ("glotta-fr-tiny", "glotta-fr-trtllm", "glotta-fr-trtllm-engine"):
        shutil.copytree(REPO / name, repo / name)
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "trtllm", str(tp2_checkpoint), "--output",
                        str(tmp_path / "out"), "--tokenizer", str(tokenizer), "--max-input-len", "16",
                        "--max-seq-len", "32", "--int8-kv-cache", "--calib-dataset", str(texts), "--engine-dir",
                        str(repo / "glotta-fr-trtllm-engine" / "1")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    reuse = _config((repo / "glotta-fr-trtllm-engine" / "config.pbtxt").read_text())
    assert reuse.parameters["enable_kv_cache_reuse"].string_value == "false"
    assert json.loads((repo / "glotta-fr-trtllm" / "glotta.json").read_text())["limits"] == {
        "max_input_len": 16, "max_seq_len": 32}
    engine = TritonEngine("127.0.0.1:1", repo / "glotta-fr-trtllm")
    assert engine.max_context == 32 and engine.max_prompt == 16

    async def ask(prompt: str, n: int):
        async for _ in engine.generate(GenerationRequest(prompt=prompt, max_new_tokens=n)):
            pass

    with pytest.raises(GlottaError, match="max_input_len") as e:
        asyncio.run(ask("Le noyau Linux " * 8, 4))
    assert e.value.kind == ErrorKind.INVALID and e.value.param == "prompt"
    with pytest.raises(GlottaError, match="> 32") as e:
        asyncio.run(ask("Le noyau", 31))
    assert e.value.kind == ErrorKind.INVALID


def test_trtllm_calibration_works_offline_with_a_local_file(tmp_path, tp2_checkpoint, tokenizer):
    """TensorRT-LLM v0.14 calibrates for SmoothQuant and the INT8 KV cache from --calib_dataset (default `lambada`, a
    Hub download); tensorrt_llm/models/convert_utils.py load_calib_dataset reads a local folder only when its name
    contains `lambada` (split `validation`, key `text`) or `cnn_dailymail`."""
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"Phrase numéro {i}."}) + "\n" for i in range(20)) + "{}\n")
    out = tmp_path / "trtllm"
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "trtllm", str(tp2_checkpoint), "--output",
                        str(out), "--int8-kv-cache", "--calib-dataset", str(texts), "--max-input-len", "16",
                        "--max-seq-len", "32", "--tokenizer", str(tokenizer)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    calib = out / "calib" / "lambada" / "validation.jsonl"
    rows = [json.loads(line) for line in calib.read_text().splitlines()]
    assert len(rows) == 20 and rows[3] == {"text": "Phrase numéro 3."}
    text = (out / "build.sh").read_text()
    assert f"--int8-kv-cache --calib-dir {calib.parent}" in text
    assert "--use_paged_context_fmha disable" in text  # TRT-LLM refuses paged context FMHA with an INT8 KV cache


def test_gpu_check_says_which_steps_need_a_gpu_and_fails_when_asked_for_them(tmp_path):
    """On a machine without a GPU: `--cpu-only` runs the reference and exits 0; asked for everything (what
    `make gpu-check` asks), it runs what it can, names each GPU step with why it cannot run, and exits 3."""
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("a GPU machine: `make gpu-check` runs the GPU steps for real")
    base = [sys.executable, "-m", "glotta.export.gpu_check", "--model", str(TINY), "--tokens", "4", "--work",
            str(tmp_path)]
    r = subprocess.run([*base, "--cpu-only"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| cpu | ran |" in r.stdout and "| engine fp16 | skipped |" in r.stdout
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stdout + r.stderr
    for step in ("gpu", "install", "engine fp16", "engine int8 weight-only", "engine int8 KV cache",
                 "engine 2:4 sparse"):
        assert f"| {step} | skipped | 0 | needs a GPU: no nvidia-smi" in r.stdout, (step, r.stdout)
    assert "Traceback" not in r.stderr


def test_fastertransformer_export_equals_fastertransformers_own_converter(tmp_path):
    """A golden made once by FasterTransformer's megatron_ckpt_convert.py (unchanged, from a checkout outside this
    repository; the command is in the fixture) on a checkpoint the local trainer's writer makes bit for bit anywhere:
    every file it wrote, config.ini's fields included, is what `glotta export fastertransformer` writes."""
    import hashlib

    from .golden import TOKENIZER, golden_checkpoint

    golden = json.loads((Path(__file__).parent / "fixtures" / "ft_converter_golden.json").read_text())
    ckpt = golden_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "ft"
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "fastertransformer", str(ckpt), "--output",
                        str(out), "--infer-gpus", str(golden["infer_gpus"]), "--precision",
                        golden["weight_data_type"], "--tokenizer", str(TOKENIZER)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    folder = out / f"{golden['infer_gpus']}-gpu"
    ours = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    differ = sorted(n for n, digest in golden["files"].items() if ours.get(n) != digest)
    assert not differ, differ
    cfg = configparser.ConfigParser()
    cfg.read(folder / "config.ini")
    assert {k: cfg["gpt"][k] for k in golden["config_ini"]} == golden["config_ini"]


def test_gpu_check_prepares_each_engine_up_to_tensorrt_llm(tmp_path):
    """Everything before TensorRT-LLM runs here: the HF folder of the served weights (pruned to 2:4 for the sparse
    engine), the calibration texts of the INT8 KV cache, build.sh — which then stops, saying this Python has no
    TensorRT-LLM."""
    from glotta.core.tokenizer import Tokenizer
    from glotta.export import gpu_check
    from glotta.export.sparsity import verify_path

    prompts = [Tokenizer(TINY / "tokenizer.json").encode(p) for p in gpu_check.PROMPTS]
    for label in ("int8 KV cache", "2:4 sparse"):
        with pytest.raises(RuntimeError, match="cannot import tensorrt_llm"):
            gpu_check.build_and_run(label, gpu_check.ENGINES[label], TINY, Path(sys.executable), tmp_path, prompts,
                                    4, 0)
    kv, sparse = tmp_path / "int8-KV-cache", tmp_path / "2:4-sparse"
    assert (kv / "hf-gpt2" / "model.safetensors").is_file()
    assert (kv / "calib" / "lambada" / "validation.jsonl").is_file() and "--int8-kv-cache" in (kv / "build.sh").read_text()
    assert verify_path(sparse / "pruned" / "1" / "model.onnx").ok
    assert "--weight_sparsity" in (sparse / "build.sh").read_text()
