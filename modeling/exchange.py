"""The exchange ONNX graph: what `glotta export onnx` writes for a GPT of the learned-position family (torch dynamo
export of a `transformers` model, `past_key_values` inputs) — the shipped demo models, and what the GPU builders
(TensorRT, FasterTransformer checks) read. This module reads its weights back under Hugging Face's names."""

from __future__ import annotations

import numpy as np

from .registry import exchange_family
from .spec import Architecture


def exchange_architecture(proto, state: dict[str, np.ndarray]) -> Architecture:
    """The architecture an exchange ONNX implies: heads from its cache inputs, sizes from its weights."""
    from dataclasses import replace

    pasts = [i for i in proto.graph.input if i.name.startswith("past_key_values.")]
    dims = [d.dim_value for d in pasts[0].type.tensor_type.shape.dim]
    prefix = "transformer." if "transformer.wpe.weight" in state else ""
    n_positions, n_embd = state[prefix + "wpe.weight"].shape
    vocab = state.get("lm_head.weight", state.get(prefix + "wte.weight")).shape[0]
    return replace(exchange_family().traits(), vocab_size=int(vocab), n_layer=len(pasts) // 2, n_embd=int(n_embd),
                   n_head=dims[1], n_kv_head=dims[1], n_positions=int(n_positions),
                   intermediate_size=int(state[prefix + "h.0.mlp.c_fc.weight"].shape[1]))


def exchange_onnx_state(proto) -> dict[str, np.ndarray]:
    """The HF-named GPT-2 state dict held by an exchange ONNX (torch dynamo export).

    Names alone are not enough: the exporter stores equal tensors once (untrained layer norms share one initializer)
    and drops zero biases, so layer norms and linear layers are read in graph order from the nodes that use them.
    """
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in proto.graph.initializer}
    state = {name.removeprefix("m.").removesuffix("_fp16"): a for name, a in arrays.items()}
    for node in proto.graph.node:  # fp16 storage: the graph reads each weight through a Cast
        if node.op_type == "Cast" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    linears = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1
               and n.input[1] in arrays and arrays[n.input[1]].ndim == 2]
    n_layer = (len(norms) - 1) // 2
    if len(norms) != 2 * n_layer + 1 or len(linears) != 4 * n_layer:
        raise ValueError(f"not a GPT-2 exchange graph: {len(norms)} layer norms, {len(linears)} linear layers")
    prefix = "transformer."
    for k, node in enumerate(norms):
        name = "ln_f" if k == 2 * n_layer else f"h.{k // 2}.ln_{k % 2 + 1}"
        state[f"{prefix}{name}.weight"] = arrays[node.input[1]]
        state[f"{prefix}{name}.bias"] = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else \
            np.zeros_like(arrays[node.input[1]])
    for k, node in enumerate(linears):
        name = f"h.{k // 4}." + ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")[k % 4]
        weight = arrays[node.input[1]]
        if any(a.name == "transB" and a.i for a in node.attribute):
            weight = weight.T
        state[f"{prefix}{name}.weight"] = weight
        bias = arrays.get(node.input[2]) if len(node.input) > 2 else None
        state[f"{prefix}{name}.bias"] = bias if bias is not None else np.zeros(weight.shape[1], np.float32)
    return state
