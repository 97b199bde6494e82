"""Megatron GPT → FasterTransformer weights: the layout `megatron_ckpt_convert.py -i CKPT -o OUT -i_g N` writes.

`OUT/N-gpu/` holds `config.ini`, `args.txt` and one raw little-endian file per tensor, transposed to [in, out] and
split over the N inference GPUs (`*.weight.<rank>.bin` for the tensor-parallel ones). The fused QKV of rank r is
[hidden, 3, hidden/N]: Q, K and V of that rank's heads, each head-major — what
`ParallelGptDecoderLayerWeight.cc` loads. We start from the reader's canonical weights, so every Megatron layout,
checkpoint version and training TP size converts (FT's own script mis-orders version 2.0 and refuses 1.0).
"""

from __future__ import annotations

import configparser
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from glotta.core.precision import check_precision
from glotta.core.tokenizer import Tokenizer, copy_tokenizer_files
from glotta.modeling.megatron_reader import MegatronCheckpoint
from glotta.modeling.registry import get

# decoder_masked_multihead_attention.cu: `switch (hidden_size_per_head)` (104 is TRT-LLM only).
FT_HEAD_SIZES = (32, 48, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256)
DTYPES = {"fp32": np.float32, "fp16": np.float16}


class FTExportError(ValueError):
    pass


def check_shape(ckpt: MegatronCheckpoint, infer_gpus: int) -> None:
    """Refuse what FasterTransformer's GPT cannot run, before a byte is written."""
    reason = get(ckpt.family).fastertransformer
    if reason is not None:
        raise FTExportError(f"{reason}, so this {ckpt.family} checkpoint cannot run on it. Use `glotta export trtllm` "
                            f"(TensorRT-LLM) for GPUs or `glotta export onnx` for the CPU engine")
    h, heads = ckpt.architecture.n_embd, ckpt.architecture.n_head
    hn = h // heads
    if h % heads or hn not in FT_HEAD_SIZES:
        raise FTExportError(
            f"head size {h}/{heads} = {h / heads:g} is not supported by FasterTransformer's decoder attention "
            f"(supported: {', '.join(map(str, FT_HEAD_SIZES))}); the generation kernel would assert at the first "
            f"token. Retrain with a head count giving a supported size ({_suggest(h, heads)}), or serve with ONNX")
    if infer_gpus < 1 or heads % infer_gpus:
        raise FTExportError(f"{heads} attention heads cannot be split over --infer-gpus {infer_gpus}")


def _suggest(hidden: int, heads: int) -> str:
    """The supported head counts nearest the model's own."""
    options = sorted((hidden // s for s in FT_HEAD_SIZES if hidden % s == 0), key=lambda n: (abs(n - heads), n))
    return "; ".join(f"{n} heads (head size {hidden // n})" for n in options[:3]) or "a hidden size divisible by 64"


def ft_tensors(ckpt: MegatronCheckpoint, infer_gpus: int) -> dict[str, np.ndarray]:
    """{file name without `.bin`: array} in FT's orientation (fp32; the caller casts)."""
    merged, arch = ckpt.merged, ckpt.architecture
    h, heads, n = arch.n_embd, arch.n_head, infer_gpus
    hn, local = h // heads, heads // infer_gpus

    def a(t) -> np.ndarray:
        return t.detach().float().numpy()

    out = {"model.wpe": a(merged["wpe"]), "model.wte": a(merged["wte"]),
           "model.final_layernorm.weight": a(merged["lnf_w"]), "model.final_layernorm.bias": a(merged["lnf_b"])}
    if "lm_head" in merged and not np.array_equal(a(merged["lm_head"]), out["model.wte"]):
        out["model.lm_head.weight"] = a(merged["lm_head"])
    for i in range(arch.n_layer):
        g = lambda name: a(merged[(i, name)])  # noqa: E731
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": g("ln1_w"), p + "input_layernorm.bias": g("ln1_b"),
                    p + "post_attention_layernorm.weight": g("ln2_w"), p + "post_attention_layernorm.bias": g("ln2_b"),
                    p + "attention.dense.bias": g("proj_b"), p + "mlp.dense_4h_to_h.bias": g("fc2_b")})
        qkv_w = g("qkv_w").reshape(heads, 3, hn, h)  # canonical rows: (head, q/k/v, hn)
        qkv_b = g("qkv_b").reshape(heads, 3, hn)
        proj, fc1_w, fc1_b, fc2 = g("proj_w").T, g("fc1_w").T, g("fc1_b"), g("fc2_w").T  # → [in, out]
        for r in range(n):
            heads_r = slice(r * local, (r + 1) * local)
            out[p + f"attention.query_key_value.weight.{r}"] = (
                qkv_w[heads_r].transpose(3, 1, 0, 2).reshape(h, 3, local * hn))
            out[p + f"attention.query_key_value.bias.{r}"] = qkv_b[heads_r].transpose(1, 0, 2).reshape(3, local * hn)
            out[p + f"attention.dense.weight.{r}"] = np.split(proj, n, axis=0)[r]
            out[p + f"mlp.dense_h_to_4h.weight.{r}"] = np.split(fc1_w, n, axis=1)[r]
            out[p + f"mlp.dense_h_to_4h.bias.{r}"] = np.split(fc1_b, n, axis=0)[r]
            out[p + f"mlp.dense_4h_to_h.weight.{r}"] = np.split(fc2, n, axis=0)[r]
    return out


def config_ini(ckpt: MegatronCheckpoint, infer_gpus: int, weight_data_type: str, end_id: int) -> str:
    arch = ckpt.architecture
    cfg = configparser.ConfigParser()
    cfg["gpt"] = {
        "model_name": "gpt", "head_num": str(arch.n_head), "size_per_head": str(arch.d_head),
        "inter_size": str(arch.intermediate_size), "num_layer": str(arch.n_layer),
        "max_pos_seq_len": str(arch.n_positions), "vocab_size": str(arch.vocab_size), "has_adapters": "False",
        "adapter_inter_size": "0",
        "layernorm_eps": "1e-05", "start_id": str(end_id), "end_id": str(end_id),
        "weight_data_type": weight_data_type, "tensor_para_size": str(infer_gpus),
        "layernorm_type": "pre_layernorm", "activation_type": "Gelu", "has_positional_encoding": "True",
        "has_pre_decoder_layernorm": "False", "has_post_decoder_layernorm": "True",
        "use_attention_linear_bias": "False",
    }
    with tempfile.SpooledTemporaryFile(mode="w+") as f:
        cfg.write(f)
        f.seek(0)
        return f.read()


def write(ckpt: MegatronCheckpoint, out: str | Path, infer_gpus: int, tokenizer_dir: str | Path,
          weight_data_type: str = "fp16") -> Path:
    """Write `out/<N>-gpu/`; built in a temporary sibling and renamed, so an interrupted export leaves nothing.
    `end_id` (and start_id) is the tokenizer's EOD: never guessed from the vocabulary size."""
    end_id = Tokenizer(tokenizer_dir).eod_id

    check_shape(ckpt, infer_gpus)
    if weight_data_type not in DTYPES:
        raise FTExportError(f"--weight-data-type must be one of {sorted(DTYPES)}")
    out = Path(out)
    target = out / f"{infer_gpus}-gpu"
    if target.exists():
        raise FTExportError(f"{target} exists (FasterTransformer's converter refuses too); remove it first")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{infer_gpus}-gpu.", dir=out))
    try:
        dtype = DTYPES[weight_data_type]
        for name, arr in ft_tensors(ckpt, infer_gpus).items():
            np.ascontiguousarray(arr.astype(dtype)).tofile(tmp / f"{name}.bin")
        (tmp / "config.ini").write_text(config_ini(ckpt, infer_gpus, weight_data_type, end_id))
        args = vars(ckpt.args) if ckpt.args is not None else {}  # as FT's converter writes it: `key:value`, in order
        (tmp / "args.txt").write_text("".join(f"{k}:{v}\n" for k, v in args.items()))
        copy_tokenizer_files(tokenizer_dir, tmp, ("vocab.json", "merges.txt"))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_back(folder: str | Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor of an FT folder, with the dtype its config.ini declares (for checks and tests)."""
    folder = Path(folder)
    cfg = configparser.ConfigParser()
    cfg.read(folder / "config.ini")
    return np.fromfile(folder / f"{name}.bin", dtype=DTYPES[cfg["gpt"]["weight_data_type"]]).reshape(shape)


PRECISIONS = ("fp32", "fp16", "int8")  # int8: fp16 weights that FasterTransformer quantizes at load (its int8_mode 1)


def export_fastertransformer(source: str | Path, output: str | Path, tokenizer: str | Path | None = None,
                             infer_gpus: int = 1, precision: str = "fp16", triton: bool = False,
                             visible_gpus: int | None = None) -> tuple[Path, MegatronCheckpoint]:
    """`OUTPUT/N-gpu/` exactly as megatron_ckpt_convert.py writes it; with `triton`, OUTPUT is a Triton model folder
    (weights in OUTPUT/1/N-gpu, the fastertransformer config.pbtxt beside). Returns the weights folder."""
    from glotta.server.triton.config_writers.engines import engine_config

    from .tokenizer_source import read_checkpoint, tokenizer_dir

    check_precision(precision, PRECISIONS)
    out = Path(output)
    tok = tokenizer_dir(source, tokenizer)
    ckpt = read_checkpoint(source, tok)
    check_shape(ckpt, infer_gpus)  # before anything is written
    data_type = "fp32" if precision == "fp32" else "fp16"
    folder = write(ckpt, out / "1" if triton else out, infer_gpus, tok, data_type)
    if triton:
        overrides = {"tensor_para_size": str(infer_gpus), "data_type": data_type,
                     "int8_mode": "1" if precision == "int8" else "0"}
        (out / "config.pbtxt").write_text(engine_config(out.name, "fastertransformer", overrides, visible_gpus))
    return folder, ckpt
