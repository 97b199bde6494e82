"""Hugging Face model folders (GPT2LMHeadModel, LlamaForCausalLM) → served Glotta model folders, without torch.

The folder's config.json gives the architecture (decoder_spec.py), its safetensors the weights, its tokenizer the
special tokens: end of document from the config's `eos_token_id` (or tokenizer_config.json's `eos_token`), and the
token every prompt starts with when the tokenizer adds one (Llama's `<s>`). The result is the fused fp32 graph in
`1/model.onnx`, glotta.json with the architecture, the tokenizer, and Triton's config — the same folder
`glotta export onnx` writes for a Megatron checkpoint. `glotta serve --model HF_DIR` converts once, into the cache,
keyed by the content of the config and weights.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
from rich.progress import Progress

from glotta.core.errors import invalid
from glotta.core.model_folder import ModelFolder
from glotta.core.paths import cache_dir, content_digest
from glotta.core.tokenizer import TOKENIZER_FILES, copy_tokenizer_files

from .decoder_graph import build_decoder, save_decoder
from .decoder_spec import DecoderSpec, gpt2_weights, llama_weights, spec_from_hf_config

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}


def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and bool(weight_files(path)) and not ModelFolder.is_model(path)


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    return [p for p in [path / "model.safetensors"] if p.is_file()]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file as fp32/int numpy arrays. Written here (the format is an 8-byte length, a JSON
    header and raw little-endian data) because numpy has no bfloat16, the dtype most Llama checkpoints ship in."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = np.memmap(path, np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        raw = data[start:stop]
        if info["dtype"] == "BF16":  # the upper half of an fp32
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            arr = raw.view(_DTYPES[info["dtype"]])
        else:
            raise invalid(f"{path}: tensor {name} has dtype {info['dtype']}, which Glotta cannot read", "weights")
        out[name] = arr.reshape(info["shape"])
    return out


def special_tokens(src: Path, cfg: dict) -> dict:
    """eod_token / bos_token names for glotta.json, from the HF folder's own files (never guessed)."""
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {a["id"]: a["content"] for a in tok.get("added_tokens", [])}
    vocab = tok.get("model", {}).get("vocab", {})
    if isinstance(vocab, dict):
        by_id |= {i: t for t, i in vocab.items() if i not in by_id}
    tcfg_path = src / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text(encoding="utf-8")) if tcfg_path.is_file() else {}

    def name(key: str) -> str | None:
        value = tcfg.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return value

    eos_id = cfg.get("eos_token_id")
    eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id
    eod = by_id.get(eos_id) if eos_id is not None else name("eos_token")
    if eod is None:
        raise invalid(f"{src}: no end-of-text token (config.json eos_token_id, tokenizer_config.json eos_token)",
                      "tokenizer")
    out = {"eod_token": eod}
    post = tok.get("post_processor") or {}
    adds_bos = tcfg.get("add_bos_token", post.get("type") == "TemplateProcessing")
    bos_id = cfg.get("bos_token_id")
    if adds_bos and bos_id is not None and bos_id in by_id:
        out["bos_token"] = by_id[bos_id]
    return out


def convert_hf_folder(src: str | Path, out: str | Path, source: str | Path | None = None) -> Path:
    """Write the served model folder for a Hugging Face folder (atomically: a finished folder or none); `source`
    names where the weights came from when `src` is an intermediate folder."""
    from glotta.server.triton.config_writers.cpu import write_model

    src, out = Path(src), Path(out)
    cfg = json.loads((src / "config.json").read_text())
    spec = spec_from_hf_config(cfg)
    if not (src / "tokenizer.json").is_file():
        raise invalid(f"{src}: no tokenizer.json next to the weights (save the tokenizer with the model)", "tokenizer")
    tokens = special_tokens(src, cfg)
    state: dict[str, np.ndarray] = {}
    with Progress(transient=True) as progress:
        files = weight_files(src)
        task = progress.add_task(f"reading {src.name}", total=len(files) + 1)
        for f in files:
            state |= read_safetensors(f)
            progress.advance(task)
        weights = (gpt2_weights if spec.family == "gpt2" else llama_weights)(state, spec.n_layer)
        graph = build_decoder(spec, weights)
        progress.advance(task)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_decoder(graph, tmp / "1" / "model.onnx")
        ModelFolder.write(tmp, {"name": out.name, **_meta(spec), **tokens, "source": str(source or src)}, None)
        copy_tokenizer_files(src, tmp, (*TOKENIZER_FILES, "tokenizer_config.json"))
        write_model(tmp, out.name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _meta(spec: DecoderSpec) -> dict:
    return {"architecture": spec.family, "vocab_size": spec.vocab_size, "n_positions": spec.n_positions,
            "n_layer": spec.n_layer, "n_embd": spec.n_embd, "n_head": spec.n_head, "parameters": spec.parameters(),
            "decoder": spec.to_json()}


def cached_hf_model(src: str | Path) -> Path:
    """The served folder of a Hugging Face folder, converted at first use into the cache (by content hash)."""
    src = Path(src).resolve()
    with Progress(transient=True) as progress:
        digest = content_digest([src / "config.json", *weight_files(src)], progress)
    target = cache_dir() / "hf" / f"{src.name}-{digest}" / src.name
    if not ModelFolder.is_model(target):
        convert_hf_folder(src, target)
    return target
