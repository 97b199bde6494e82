"""One precision vocabulary for `serve`, `export`, `triton` and the TensorRT-LLM build script.

    fp32 | fp16 | bf16 | int8 | int4 | fp16-sparse | int8-sparse

`int8` and `int4` are weight-only quantization where the engine has a choice (TensorRT-LLM, FasterTransformer's
int8 mode, the CPU engine's per-column INT8 with dynamically quantized activations); TensorRT's explicit INT8 is
Q/DQ. `-sparse` adds 2:4 structured sparsity to the weights (TensorRT's SPARSE_WEIGHTS, TensorRT-LLM's
--weight_sparsity). Each command accepts the subset its engine builds; older spellings are refused with the one to use.
"""

from __future__ import annotations

from .errors import invalid

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4", "fp16-sparse", "int8-sparse")
# flags from before this vocabulary → what to write instead (refused with that hint, never silently mapped)
OLD_SPELLINGS = {
    "--int8": "--precision int8",
    "--sparse": "--precision int8-sparse (or fp16-sparse)",
    "--no-fp16": "--precision fp32",
    "--quant": "--precision (fp16, int8, int4, int8-sparse; SmoothQuant: --precision int8 --smoothquant)",
    "--int8-mode": "--precision int8",
    "--weight-data-type": "--precision fp16 (or fp32)",
}


def check_precision(value: str, allowed: tuple[str, ...], where: str = "--precision") -> str:
    if value not in allowed:
        hint = f" (this engine builds: {', '.join(allowed)})" if value in PRECISIONS else ""
        raise invalid(f"{where} {value!r} is not one of {', '.join(allowed)}{hint}", "precision")
    return value


def is_sparse(precision: str) -> bool:
    return precision.endswith("-sparse")


def base(precision: str) -> str:
    """The number format without the sparsity: `int8-sparse` → `int8`."""
    return precision.removesuffix("-sparse")
