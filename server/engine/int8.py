"""INT8 engines derived from the fp32 ONNX at first use (nothing extra is committed).

`quant_pre_process` matters: without it the tied lm_head reaches its MatMul through a Transpose, the quantizer turns
that into DequantizeLinear + an fp32 MatMul on every step, and "INT8" ends up slower than fp32. After it, every
MatMul becomes MatMulInteger (see shared/reference/cpu-onnx-findings.md §4).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from glotta.core.paths import cache_dir


def derive_int8(fp32_path: str | Path, out_dir: Path | None = None) -> Path:
    """Path of the dynamic-INT8 twin of `fp32_path`, built once and cached by content hash."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path = Path(fp32_path)
    digest = hashlib.sha256(fp32_path.read_bytes()).hexdigest()[:16]
    out_dir = out_dir or cache_dir() / "int8"
    target = out_dir / f"{fp32_path.parent.parent.name}-{digest}.int8.onnx"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        q = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(pre), str(q), weight_type=QuantType.QInt8)
        os.replace(q, target)  # atomic: a concurrent or interrupted first use never sees half a file
    return target
