"""The pieces of Triton's `config.pbtxt` text format every config writer renders with."""

from __future__ import annotations


def io(name: str, dtype: str, dims: list[int], optional: bool = False, scalar: bool = False,
       ragged: bool = False) -> str:
    """One input or output tensor; `scalar` reshapes `dims: [1]` to `[ ]`, `ragged` allows a ragged batch."""
    data_type = "STRING" if dtype == "BYTES" else dtype
    lines = [f'    name: "{name}"', f"    data_type: TYPE_{data_type}", f"    dims: {dims}"]
    if scalar:
        lines.append("    reshape: { shape: [ ] }")
    if optional:
        lines.append("    optional: true")
    if ragged:
        lines.append("    allow_ragged_batch: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def block(kind: str, items: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(items) + "\n]"


def params(values: dict[str, str]) -> str:
    return "\n".join(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}' for k, v in values.items())


def cpu_instances(count: int = 1) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: KIND_CPU\n  }}\n]\n"
