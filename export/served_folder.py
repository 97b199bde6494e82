"""A Megatron checkpoint or a Hugging Face folder → a served model folder (weights, glotta.json, tokenizer, Triton
config): what `glotta serve --model DIR` and Triton's CPU model load."""

from __future__ import annotations

import tempfile
from pathlib import Path

from glotta.core.errors import invalid
from glotta.core.tokenizer import copy_tokenizer_files
from glotta.modeling.hf_folder import convert_hf_folder, is_hf_folder
from glotta.modeling.model_folder import ModelFolder
from glotta.modeling.registry import get
from glotta.modeling.spec import ModelSpec
from glotta.server.triton.config_writers.cpu import write_model

from .onnx_export import export_gpt2_onnx
from .tokenizer_source import read_checkpoint, tokenizer_dir


def export_served_folder(source: str | Path, output: str | Path, tokenizer: str | Path | None = None,
                         fp16_storage: bool = False) -> Path:
    """A Hugging Face folder is converted with its own tokenizer and special tokens; a Megatron checkpoint of the
    exchange family becomes the exchange graph (`fp16_storage`: weights stored in fp16, computed in fp32), any other
    family the engine's fused graph, through the one Hugging Face conversion."""
    from glotta.modeling.megatron_hf import to_hf

    out = Path(output)
    if is_hf_folder(source):
        return convert_hf_folder(source, out, write_triton=write_model)
    tok = tokenizer_dir(source, tokenizer)
    ckpt = read_checkpoint(source, tok)
    if not get(ckpt.family).exchange:
        if fp16_storage:
            raise invalid("fp16 storage is for the exchange graph; this family is served as the fused fp32 graph",
                          "fp16_storage")
        with tempfile.TemporaryDirectory() as tmp:
            to_hf(ckpt, tok).save_pretrained(tmp, safe_serialization=True)
            copy_tokenizer_files(tok, Path(tmp))
            return convert_hf_folder(tmp, out, source=source, write_triton=write_model)
    export_gpt2_onnx(to_hf(ckpt), out / "1" / "model.onnx", fp16_weights=fp16_storage)
    spec = ModelSpec(name=out.name, family=ckpt.family, architecture=ckpt.architecture, weights="exchange",
                     source=str(source))
    ModelFolder.write(out, spec, tok)
    write_model(out)  # Triton config.pbtxt + 1/model.py: the folder is served by `glotta serve` and by Triton
    return out
