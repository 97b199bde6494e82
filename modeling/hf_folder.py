"""Hugging Face model folders (a registered family: GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM) → served
Glotta model folders, without torch.

The folder's config.json names the family (registry.py), which reads its sizes and weight names; its safetensors
give the weights; its tokenizer files are taken at their word (special_tokens.py). The result is the fused fp32
graph in `1/model.onnx`, glotta.json (the spec), the effective tokenizer with the folder's own tokenizer files, and
Triton's config — the same folder `glotta export onnx` writes for a Megatron checkpoint. `glotta serve --model HF_DIR`
converts once, into the cache, keyed by the content of every file that shapes the served model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from rich.progress import Progress

from glotta.core.atomic import atomic_write
from glotta.core.errors import invalid
from glotta.core.paths import cache_dir, content_digest

from .decoder_graph import GRAPH_VERSION, build_decoder, save_decoder
from .engine_graph import WEIGHTS
from .registry import for_hf_config, get
from .safetensors import read_safetensors, weight_files
from .spec import SCHEMA_VERSION, ModelSpec
from .special_tokens import TOKENIZER_FILES, resolve

CONVERSION_VERSION = 2  # bump when a conversion changes what it writes: cached folders are keyed by it


def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and bool(weight_files(path)) and not (path / "glotta.json").is_file()


def hf_spec(src: Path, name: str, source: str | None = None) -> tuple[ModelSpec, dict, dict]:
    """(spec, the family's config, the effective tokenizer.json) of a Hugging Face folder; refusals name the file."""
    try:
        cfg = json.loads((src / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise invalid(f"{src}/config.json: cannot read it ({e})", "config.json") from None
    family = for_hf_config(cfg)
    try:
        arch = family.from_hf_config(cfg)
    except (KeyError, ValueError) as e:
        raise invalid(f"{src}/config.json: {family.name}: {e}", "config.json") from None
    tokenizer = resolve(src, cfg)
    spec = ModelSpec(name=name, family=family.name, architecture=arch, tokenizer=tokenizer.spec, weights="fused",
                     source=str(source or src))
    return spec, cfg, tokenizer.tokenizer_json


def convert_hf_folder(src: str | Path, out: str | Path, source: str | Path | None = None,
                      write_triton: Callable[[Path, str], None] | None = None) -> Path:
    """Write the served model folder for a Hugging Face folder (atomically: a finished folder or none); `source`
    names where the weights came from when `src` is an intermediate folder; `write_triton(folder, name)` adds the
    serving side's files (Triton's config)."""
    src, out = Path(src), Path(out)
    spec, _, tokenizer_json = hf_spec(src, out.name, source)
    state: dict = {}
    with Progress(transient=True) as progress:
        files = weight_files(src)
        task = progress.add_task(f"reading {src.name}", total=len(files) + 1)
        for f in files:
            state |= read_safetensors(f)
            progress.advance(task)
        graph = build_decoder(spec.architecture, get(spec.family).hf_weights(state, spec.architecture))
        progress.advance(task)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_decoder(graph, tmp / WEIGHTS)
        for name in TOKENIZER_FILES[1:]:  # the folder's own files, as they are (the chat template among them)
            if (src / name).is_file():
                shutil.copy(src / name, tmp / name)
        atomic_write(tmp / "tokenizer.json", json.dumps(tokenizer_json, ensure_ascii=False))
        spec.write(tmp)
        if write_triton is not None:
            write_triton(tmp, out.name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cache_key(src: Path, progress=None) -> str:
    """The content of every file that shapes the served model — config, weights, tokenizer files — and the versions
    of the conversion and the schema."""
    files = [src / "config.json", *weight_files(src), *(src / n for n in TOKENIZER_FILES if (src / n).is_file())]
    return f"{content_digest(files, progress)}-c{CONVERSION_VERSION}-s{SCHEMA_VERSION}-g{GRAPH_VERSION}"


def cached_hf_model(src: str | Path, write_triton: Callable[[Path, str], None] | None = None) -> Path:
    """The served folder of a Hugging Face folder, converted at first use into the cache."""
    src = Path(src).resolve()
    with Progress(transient=True) as progress:
        key = cache_key(src, progress)
    target = cache_dir() / "hf" / f"{src.name}-{key}" / src.name
    if not (target / "glotta.json").is_file():
        convert_hf_folder(src, target, write_triton=write_triton)
    return target
