"""The fused decoder graph the CPU engine runs, built directly from ONNX Runtime's contrib operators.

Why build it rather than export it: the exported GPT-2 graph has ~260 nodes (Reshape, Transpose, Concat around every
attention) and concatenates the key/value cache at every step; a decode step cost per-node overhead, not arithmetic.
Here each layer is ~9 nodes — MatMul, GroupQueryAttention, SkipLayerNormalization and FastGelu, or
SkipSimplifiedLayerNormalization and SwiGLU — and GroupQueryAttention writes each new key/value in place into the
caller's preallocated cache (`past_*` and `present_*` are bound to the same buffer, [B, KV, T_max, D]). The graph is
built from the architecture's traits (spec.py: positions, norm, MLP, biases), never from a family's name: a family
is its weight names (families/) and its traits.

Signature:
    input_ids [B, S] int64; position_ids [B, S] int64 (learned positions only; RoPE positions come from seqlens_k)
    seqlens_k [B] int32: per row, (tokens in the cache after this call) − 1
    total_sequence_length [] int32: max over rows of seqlens_k + 1
    logits_index [N] int64: rows of the flattened [B·S] positions whose logits are wanted
    past.{i}.key / past.{i}.value [B, KV, T, D]  →  present.{i}.key / .value (the same buffers)
    → logits [N, V]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from glotta.core.atomic import AtomicFile

from .rope import rope_tables
from .spec import Architecture

MS = "com.microsoft"
GRAPH_VERSION = 3  # bump when the graph changes: cached graphs are keyed by it


def past_names(n_layer: int) -> list[str]:
    return [f"past.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


# Weight-only quantization through ONNX Runtime's MatMulNBits: asymmetric blocks along the input dimension, one scale
# and zero point per block. accuracy_level 4: activations quantized to int8 per block, integer dot products (VNNI).
# Chosen by measure on the 124M GPT-2 shape (benchmarks/decode_profile.py) and French text (quantization_quality.py):
# INT8 in blocks of 128 against DynamicQuantizeMatMul (per-column weights, per-tensor activations): 1.47× tokens/s at
# batch 1, 1.11× at 16, fp32's next token kept 0.991 vs 0.987. INT4: the 4-bit head was what cost quality (greedy
# text equal to fp32's 0.69 → 0.87 with an 8-bit head; llama.cpp keeps its head at 6 bits for q4_0), and 4-bit
# blocks of 128 beside it kept as much as blocks of 32 while 1.11× (batch 1) and 1.19× (16) faster.
BLOCKWISE = {"int8": (8, 128), "int4": (4, 128)}  # precision → (bits, block) of the layers' projections
HEAD_BLOCKWISE = (8, 128)  # the LM head, at every quantized precision
NBITS_ACCURACY = 4


def quantize_blocks(weight: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] float weights → MatMulNBits' (B uint8 [N, blocks, block·bits/8], scales float [N·blocks], zero points
    uint8 [N·blocks] for 8 bits, [N·ceil(blocks/2)] for 4): the range of each block holds 0, so padding stays exact;
    4-bit values go two per byte, low nibble first."""
    k, n = weight.shape
    blocks, top = -(-k // block), 2**bits - 1
    w = np.zeros((blocks * block, n), np.float32)
    w[:k] = weight
    w = w.T.reshape(n, blocks, block)
    lo, hi = np.minimum(w.min(-1), 0.0), np.maximum(w.max(-1), 0.0)
    scale = np.maximum(hi - lo, 1e-12) / top
    zero = np.clip(np.rint(-lo / scale), 0, top).astype(np.uint8)
    q = np.clip(np.rint(w / scale[..., None]) + zero[..., None], 0, top).astype(np.uint8)
    if bits == 8:
        return q, scale.astype(np.float32).reshape(-1), zero.reshape(-1)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    zp = np.zeros((n, -(-blocks // 2) * 2), np.uint8)
    zp[:, :blocks] = zero
    zp_packed = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
    return packed, scale.astype(np.float32).reshape(-1), zp_packed.reshape(-1)


class _Builder:
    def __init__(self, weights: dict[str, np.ndarray], precision: str) -> None:
        self.weights = weights
        self.precision = precision
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used: set[str] = set()
        self.n = 0

    def w(self, name: str) -> str:
        if name not in self.used:
            self.used.add(name)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(self.weights[name], np.float32), name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs) -> list[str]:
        self.n += 1
        outs = [f"{op_type.lower()}_{self.n}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self.n}", domain=domain, **attrs))
        return outs

    def matmul(self, x: str, w: str, bias: str | None = None, out: str | None = None) -> str:
        """x @ W (+ bias), into `out` if given; quantized precisions stream about a quarter (INT8) or a sixth (INT4,
        its head in 8 bits) of fp32's bytes per step."""
        self.n += 1
        out = out or f"matmul_{self.n}"
        product = f"{out}_nobias" if bias else out
        if self.precision in BLOCKWISE:
            bits, block = HEAD_BLOCKWISE if w == "lm_head" else BLOCKWISE[self.precision]
            k, n = np.shape(self.weights[w])
            packed, scales, zeros = quantize_blocks(np.asarray(self.weights[w], np.float32), bits, block)
            args = [x, self.const(f"{w}.q{bits}", packed), self.const(w + ".scales", scales),
                    self.const(w + ".zeros", zeros)]
            self.nodes.append(helper.make_node("MatMulNBits", args, [product], name=f"MatMulNBits_{self.n}",
                                               domain=MS, K=k, N=n, bits=bits, block_size=block,
                                               accuracy_level=NBITS_ACCURACY))
        else:
            self.nodes.append(helper.make_node("MatMul", [x, self.w(w)], [product], name=f"MatMul_{self.n}"))
        if bias:
            self.nodes.append(helper.make_node("Add", [product, self.w(bias)], [out], name=f"Add_{self.n}"))
        return out


def build_decoder(spec: Architecture, weights: dict[str, np.ndarray], precision: str = "fp32") -> onnx.ModelProto:
    """The fused decoder in `precision`: fp32, or int8 / int4 weight blocks (MatMulNBits), the head too."""
    b = _Builder(weights, precision)
    learned, layernorm, gelu = spec.positions == "learned", spec.norm == "layernorm", spec.mlp == "gelu"
    E, L = spec.n_embd, spec.n_layer
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if learned:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    inputs += [
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        helper.make_tensor_value_info("logits_index", TensorProto.INT64, ["n"]),
    ]
    cache_shape = ["batch", spec.n_kv_head, "max_seq", spec.d_head]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape) for n in past_names(L)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", spec.vocab_size])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape) for n in present_names(L)]

    h = b.op("Gather", [b.w("embed"), "input_ids"])[0]
    if learned:
        h = b.op("Add", [h, b.op("Gather", [b.w("pos_embed"), "position_ids"])[0]])[0]
    rope: list[str] = []
    if not learned:
        cos, sin = rope_tables(spec)
        rope = [b.const("rope_cos", cos), b.const("rope_sin", sin)]
    eps = spec.norm_eps

    def norm(x: str, i: str) -> str:
        if layernorm:
            return b.op("LayerNormalization", [x, b.w(f"{i}.w"), b.w(f"{i}.b")], axis=-1, epsilon=eps)[0]
        return b.op("SimplifiedLayerNormalization", [x, b.w(f"{i}.w")], axis=-1, epsilon=eps)[0]

    def skip_norm(x: str, residual: str, i: str, bias: str | None) -> tuple[str, str]:
        """(norm(x + bias + residual), x + bias + residual) in one node."""
        if layernorm:
            args = [x, residual, b.w(f"{i}.w"), b.w(f"{i}.b"), b.w(bias) if bias else ""]
            out = b.op("SkipLayerNormalization", args, n_out=4, domain=MS, epsilon=eps)
        else:
            args = [x, residual, b.w(f"{i}.w"), b.w(bias) if bias else ""]
            out = b.op("SkipSimplifiedLayerNormalization", args, n_out=4, domain=MS, epsilon=eps)
        return out[0], out[3]

    x = norm(h, "lnf" if L == 0 else "0.ln1")
    for i in range(L):
        qkv_bias = f"{i}.qkv.b" if f"{i}.qkv.b" in weights else None
        qkv = b.matmul(x, f"{i}.qkv.w", qkv_bias)
        gqa_inputs = [qkv, "", "", f"past.{i}.key", f"past.{i}.value", "seqlens_k", "total_sequence_length", *rope]
        attn = f"attn_{i}"
        b.nodes.append(helper.make_node(
            "GroupQueryAttention", gqa_inputs, [attn, f"present.{i}.key", f"present.{i}.value"],
            name=f"GroupQueryAttention_{i}", domain=MS, num_heads=spec.n_head, kv_num_heads=spec.n_kv_head,
            do_rotary=int(not learned), rotary_interleaved=0))
        o = b.matmul(attn, f"{i}.o.w")
        x, h = skip_norm(o, h, f"{i}.ln2", f"{i}.o.b" if f"{i}.o.b" in weights else None)
        if gelu:
            up = b.matmul(x, f"{i}.up.w")
            act = b.op("FastGelu", [up, *([b.w(f"{i}.up.b")] if spec.mlp_bias else [])], domain=MS)[0]
        else:
            gate_up = b.matmul(x, f"{i}.up.w")
            gate, up = b.op("Split", [gate_up], n_out=2, axis=-1, num_outputs=2)
            act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])[0]])[0], up])[0]
        down = b.matmul(act, f"{i}.down.w")
        nxt = "lnf" if i == L - 1 else f"{i + 1}.ln1"
        x, h = skip_norm(down, h, nxt, f"{i}.down.b" if spec.mlp_bias else None)
    flat = b.op("Reshape", [x, b.const("flat_shape", np.array([-1, E], np.int64))])[0]
    picked = b.op("Gather", [flat, "logits_index"], axis=0)[0]
    b.matmul(picked, "lm_head", out="logits")

    graph = helper.make_graph(b.nodes, "glotta-decoder", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)],
                              producer_name="glotta", producer_version=str(GRAPH_VERSION))
    model.ir_version = 9
    return model


def save_decoder(model: onnx.ModelProto, path: str | Path) -> Path:
    """Written atomically; graphs over 1.5 GB keep their weights in a side file (protobuf stops at 2 GB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = sum(t.ByteSize() for t in model.graph.initializer) > 1_500_000_000
    if large:
        data = path.name + ".data"
        tmp_dir = path.parent / f".{path.name}.tmp"
        tmp_dir.mkdir(exist_ok=True)
        onnx.save_model(model, str(tmp_dir / path.name), save_as_external_data=True, location=data)
        os.replace(tmp_dir / data, path.parent / data)
        os.replace(tmp_dir / path.name, path)
        tmp_dir.rmdir()
        return path
    with AtomicFile(path) as f:
        f.write(model.SerializeToString())
    return path

