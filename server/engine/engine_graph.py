"""The graph the CPU engine runs for a model folder: the fused decoder, built once per model and precision.

A folder's `1/model.onnx` is either already a fused decoder (a converted Hugging Face folder: its glotta.json
carries the `decoder` spec) or an exchange export (torch dynamo: the shipped demo models, Megatron exports). Either
way the fused fp32 or INT8 graph is built from its weights at first use and cached by content hash, so nothing extra is committed and a new
graph version rebuilds by itself. INT8 is quantized here, per output column, rather than by ONNX Runtime's
`quantize_dynamic` (which cannot type the contrib operators' outputs and leaves the head in fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from glotta.core.model_folder import ModelFolder
from glotta.core.paths import cache_dir, content_digest

from .decoder_graph import GRAPH_VERSION, build_decoder, save_decoder
from .decoder_spec import exchange_onnx_state, gpt2_weights, spec_from_exchange, spec_from_meta


def decoder_weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The canonical weights a fused fp32 graph holds (its initializers carry the canonical names)."""
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def engine_graph(model_dir: str | Path, int8: bool = False) -> Path:
    folder = ModelFolder.open(model_dir)
    src = folder.onnx_path
    fused = "decoder" in folder.meta  # written with its fused graph (a converted HF folder); else an exchange export
    if fused and not int8:
        return src
    precision = "int8" if int8 else "fp32"
    target = cache_dir() / "engines" / f"{folder.name}-{content_digest([src])}-g{GRAPH_VERSION}-{precision}.onnx"
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
