"""The graph the CPU engine runs for a model folder: the fused decoder, built once per model and precision.

A folder's `1/model.onnx` is either already a fused decoder (written by `glotta export onnx`, or converted from a
Hugging Face folder) or an exchange export (torch dynamo, the shipped demo models). Either way the fused fp32 or INT8
graph is built from its weights at first use and cached by content hash, so nothing extra is committed and a new
graph version rebuilds by itself. INT8 is quantized here, per output column, rather than by ONNX Runtime's
`quantize_dynamic` (which cannot type the contrib operators' outputs and leaves the head in fp32).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from glotta.core.model_folder import ModelFolder
from glotta.core.paths import cache_dir

from .decoder_graph import GRAPH_VERSION, build_decoder, is_decoder_graph, save_decoder
from .decoder_spec import exchange_onnx_state, gpt2_weights, spec_from_exchange, spec_from_meta


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def decoder_weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The canonical weights a fused fp32 graph holds (its initializers carry the canonical names)."""
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def engine_graph(model_dir: str | Path, int8: bool = False) -> Path:
    folder = ModelFolder.open(model_dir)
    src = folder.onnx_path
    fused = is_decoder_graph(src)
    if fused and not int8:
        return src
    precision = "int8" if int8 else "fp32"
    target = cache_dir() / "engines" / f"{folder.name}-{file_digest(src)}-g{GRAPH_VERSION}-{precision}.onnx"
    if target.exists():
        return target
    proto = onnx.load(str(src))
    if fused:
        spec, weights = spec_from_meta(folder.meta), decoder_weights(proto)
    else:
        state = exchange_onnx_state(proto)
        spec = spec_from_exchange(proto, state)
        weights = gpt2_weights(state, spec.n_layer)
    return save_decoder(build_decoder(spec, weights, int8=int8), target)
