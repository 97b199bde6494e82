"""TensorRT engines from the served ONNX (KV-cache graph): FP16, INT8 (explicit Q/DQ) and 2:4 SPARSE_WEIGHTS.

TensorRT is an optional import: it cannot be pip-installed without NVIDIA's index (PyPI only has placeholder wheels)
and needs a GPU to build. What runs without it — the optimization profile, the 2:4 pruning of the ONNX, the Q/DQ
INT8 ONNX — is plain ONNX work and is tested on CPU. INT8 uses explicit quantization (QuantizeLinear /
DequantizeLinear nodes, symmetric, per-channel weights, made by ONNX Runtime's static quantizer with calibration
prompts), because TensorRT 10 deprecates implicit calibrators.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

INSTALL_HINT = (
    "TensorRT is not installed here. Build engines inside NVIDIA's image (nvcr.io/nvidia/tritonserver:24.10-trtllm-"
    "python-py3 or nvcr.io/nvidia/tensorrt:24.10-py3 ship it), or `pip install tensorrt-cu12 --extra-index-url "
    "https://pypi.nvidia.com` on a machine with a CUDA GPU; PyPI alone only has placeholder wheels."
)


class TensorRTUnavailable(RuntimeError):
    pass


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(INSTALL_HINT) from e
    return trt


PREFILL, DECODE = 0, 1  # optimization profile indices


def profiles(onnx_path: str | Path, max_batch: int, max_seq: int, opt_batch: int = 1) -> list[dict[str, tuple]]:
    """Two optimization profiles, {input: (min, opt, max) shape} each, for every graph input: prefill (empty past,
    1..max_seq new tokens) and decode (one new token on a 1..max_seq − 1 past). In each, every shape triple is one
    the graph can run: mask length = past + new (one profile for both would allow max_seq new tokens on a
    max_seq − 1 past)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    opt_seq = max(2, max_seq // 2)
    # (new tokens, past) at min / opt / max, per profile
    phases = {PREFILL: ((1, 0), (opt_seq, 0), (max_seq, 0)), DECODE: ((1, 1), (1, opt_seq - 1), (1, max_seq - 1))}
    batches = (1, opt_batch, max_batch)
    out = []
    for phase in (PREFILL, DECODE):
        shapes: dict[str, tuple] = {}
        for inp in graph.input:
            dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            name = inp.name
            if name in ("input_ids", "position_ids"):  # [b, new tokens]
                shapes[name] = tuple((b, new) for b, (new, _) in zip(batches, phases[phase]))
            elif name == "attention_mask":  # [b, past + new]
                shapes[name] = tuple((b, new + past) for b, (new, past) in zip(batches, phases[phase]))
            elif name.startswith("past_key_values."):  # [b, heads, past, head_dim]
                shapes[name] = tuple((b, dims[1], past, dims[3]) for b, (_, past) in zip(batches, phases[phase]))
            else:
                raise ValueError(f"{onnx_path}: unexpected input {name!r}; expected the Glotta KV-cache signature")
        out.append(shapes)
    return out


class _Prompts:
    """ONNX Runtime CalibrationDataReader: one prefill feed per calibration prompt (empty past)."""

    def __init__(self, onnx_path: Path, ids: list[list[int]]) -> None:
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        self.past = [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in graph.input
                     if i.name.startswith("past_key_values.")]
        self.feeds = iter([self._feed(x) for x in ids if x])

    def _feed(self, ids: list[int]) -> dict:
        n = len(ids)
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, n), np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None]}
        for name, dims in self.past:
            feed[name] = np.zeros((1, dims[1], 0, dims[3]), np.float32)
        return feed

    def get_next(self):
        return next(self.feeds, None)


def quantize_qdq(src: str | Path, dst: str | Path, calibration_ids: list[list[int]]) -> Path:
    """INT8 Q/DQ ONNX for TensorRT: symmetric activations and per-channel weights (what TensorRT requires)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / "qdq.onnx"
        quantize_static(str(pre), str(out), _Prompts(pre, calibration_ids), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=["MatMul", "Gemm"], calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        os.replace(out, dst)
    return dst


def build_engine(onnx_path: str | Path, plan_path: str | Path, *, fp16: bool = True, int8: bool = False,
                 sparse: bool = False, max_batch: int = 16, max_seq: int = 256, workspace_gb: float = 4.0) -> dict:
    """Serialize a TensorRT plan; returns what the builder reported (layers eligible for / using sparse math)."""
    trt = require_tensorrt()
    logger = _CapturingLogger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external data resolves
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    for shapes in profiles(onnx_path, max_batch, max_seq):  # PREFILL, then DECODE
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT build failed:\n" + "\n".join(logger.lines[-20:]))
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_suffix(".plan.tmp")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, plan_path)
    sparse_lines = [x for x in logger.lines if "(Sparsity)" in x or "sparse implementation" in x]
    return {"plan": str(plan_path), "bytes": plan_path.stat().st_size, "sparsity_log": sparse_lines}


def _CapturingLogger(trt):  # noqa: N802 - a factory: tensorrt's ILogger base class exists only once imported
    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity, msg) -> None:
            self.lines.append(str(msg))
            if severity <= trt.ILogger.Severity.WARNING:
                print(f"[TensorRT] {msg}")

    return Logger()


def calibration_ids(tokenizer: Path) -> list[list[int]]:
    """Token ids of Glotta's shipped sample prompts, the calibration set for INT8."""
    from glotta.core.sample_texts import sample_prompts
    from glotta.core.tokenizer import Tokenizer

    tok = Tokenizer(tokenizer, None)
    return [tok.encode_prompt(p["prompt"]) for p in sample_prompts()]


PRECISIONS = ("fp32", "fp16", "int8", "fp16-sparse", "int8-sparse")


def export_tensorrt(source: str | Path, output: str | Path, tokenizer: str | Path | None = None,
                    precision: str = "fp16", max_batch: int = 16, max_seq: int = 256) -> dict:
    """A served model folder (its 1/model.onnx) or an ONNX file → a TensorRT plan: FP16, explicit INT8 (Q/DQ
    calibrated on CPU), 2:4 SPARSE_WEIGHTS (the ONNX pruned first if it is not 2:4). Returns the build's report,
    with the steps taken (`steps`)."""
    from glotta.core.errors import invalid
    from glotta.core.precision import base, check_precision, is_sparse

    from .sparsity import sparsify_onnx, verify_path

    check_precision(precision, PRECISIONS)
    src = Path(source)
    onnx_path = src / "1" / "model.onnx" if src.is_dir() else src
    if not onnx_path.is_file():
        raise invalid(f"{onnx_path}: no such ONNX file", "source")
    require_tensorrt()
    work = Path(output).with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    steps = []
    if is_sparse(precision) and not verify_path(onnx_path).ok:
        n = sparsify_onnx(onnx_path, work / "sparse.onnx")
        steps.append(f"pruned {n} matrices 2:4 (magnitude, along the reduction dimension) → {work / 'sparse.onnx'}")
        onnx_path = work / "sparse.onnx"
    int8 = base(precision) == "int8"
    if int8:
        onnx_path = quantize_qdq(onnx_path, work / "qdq.onnx", calibration_ids(Path(tokenizer or src)))
        steps.append(f"explicit INT8 (Q/DQ, symmetric, per-channel weights) → {onnx_path}")
    info = build_engine(onnx_path, output, fp16=base(precision) != "fp32", int8=int8, sparse=is_sparse(precision),
                        max_batch=max_batch, max_seq=max_seq)
    return {**info, "steps": steps}
