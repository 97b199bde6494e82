"""The graph the CPU engine runs for a model folder: the fused decoder, built once per model and precision.

A folder's weights are either already the fused decoder (`weights: fused`, a converted Hugging Face folder) or an
exchange export (`weights: exchange`: the shipped demo models, Megatron exports). Either way the fused fp32, INT8 or
INT4 graph is built from them at first use and cached by content hash, so nothing extra is committed and a new graph
version rebuilds by itself. INT8 and INT4 are quantized here, in blocks (decoder_graph.BLOCKWISE), rather than by
ONNX Runtime's `quantize_dynamic` (which cannot type the contrib operators' outputs and leaves the head in fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from glotta.core.paths import cache_dir, content_digest
from glotta.core.precision import check_precision

from .decoder_graph import GRAPH_VERSION, build_decoder, save_decoder
from .exchange import exchange_architecture, exchange_onnx_state
from .registry import get
from .spec import ModelSpec

WEIGHTS = Path("1") / "model.onnx"  # Triton's numbered version folder


def decoder_weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The canonical weights a fused fp32 graph holds (its initializers carry the canonical names)."""
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


PRECISIONS = ("fp32", "int8", "int4")  # what the CPU engine's graph computes in


def engine_graph(model_dir: str | Path, precision: str = "fp32") -> Path:
    check_precision(precision, PRECISIONS)
    spec = ModelSpec.read(model_dir)
    src = Path(model_dir) / WEIGHTS
    if spec.weights == "fused" and precision == "fp32":
        return src
    target = cache_dir() / "engines" / f"{spec.name}-{content_digest([src])}-g{GRAPH_VERSION}-{precision}.onnx"
    if target.exists():
        return target
    proto = onnx.load(str(src))
    if spec.weights == "fused":
        arch, weights = spec.architecture, decoder_weights(proto)
    else:
        state = exchange_onnx_state(proto)
        arch = exchange_architecture(proto, state)
        weights = get(spec.family).hf_weights(state, arch)
    return save_decoder(build_decoder(arch, weights, precision), target)
