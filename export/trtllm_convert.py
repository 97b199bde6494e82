"""Hugging Face folder → TensorRT-LLM checkpoint through TensorRT-LLM's Python API: no example scripts, whose paths
differ between releases and images (v0.14 kept GPT in `examples/gpt`, later ones in `examples/models/core/gpt`).

    python3 -m glotta.export.trtllm_convert --hf-dir HF --model GPTForCausalLM --output-dir CK [--tp 2]
        [--dtype float16] [--weight-only int8|int4] [--smoothquant 0.5] [--int8-kv-cache] [--calib-dir DIR]
        [--option gpt_variant=gpt2]

Runs where TensorRT-LLM is installed (the NGC image, whose Python gets Glotta with --no-deps, or the venv of
`make gpu-check`): it imports nothing of Glotta's. What it calls (tensorrt_llm/models/{gpt,llama,qwen}/model.py):
`Cls.from_hugging_face(dir, dtype, mapping=Mapping(...), quant_config=QuantConfig(...))` then `save_checkpoint`
per rank for weight-only and plain precisions; `Cls.quantize(dir, out, dtype, mapping, quant_config,
calib_dataset=...)` where activations are calibrated (SmoothQuant, INT8 KV cache), as `convert_checkpoint.py` does.
"""

from __future__ import annotations

import argparse
import sys

# tensorrt_llm.quantization.QuantAlgo member names
WEIGHT_ONLY = {"int8": "W8A16", "int4": "W4A16"}
SMOOTHQUANT = "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN"  # convert_checkpoint.py: --smoothquant --per_channel --per_token
INT8_KV = "INT8"


def quant_fields(weight_only: str | None, smoothquant: float | None, int8_kv_cache: bool) -> dict:
    """QuantConfig's fields for the options (names of QuantAlgo members; None where nothing is quantized)."""
    algo = SMOOTHQUANT if smoothquant is not None else WEIGHT_ONLY.get(weight_only or "")
    fields = {"quant_algo": algo, "kv_cache_quant_algo": INT8_KV if int8_kv_cache else None}
    if smoothquant is not None:
        fields["smoothquant_val"] = smoothquant
    return fields


def convert(a: argparse.Namespace) -> None:
    import tensorrt_llm.models as models
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models.modeling_utils import QuantConfig
    from tensorrt_llm.quantization import QuantAlgo

    cls = getattr(models, a.model)
    fields = quant_fields(a.weight_only, a.smoothquant, a.int8_kv_cache)
    quant = QuantConfig(**{k: (getattr(QuantAlgo, v) if k.endswith("algo") and v else v) for k, v in fields.items()})
    options = dict(o.split("=", 1) for o in a.option)
    if a.smoothquant is not None or a.int8_kv_cache:  # calibrated once; it writes every rank's files itself
        cls.quantize(a.hf_dir, a.output_dir, dtype=a.dtype, mapping=Mapping(world_size=a.tp, tp_size=a.tp, pp_size=1),
                     quant_config=quant, calib_dataset=a.calib_dir, **options)
        print(f"{a.tp} rank(s): {a.model} {fields} → {a.output_dir}", flush=True)
        return
    for rank in range(a.tp):
        mapping = Mapping(world_size=a.tp, rank=rank, tp_size=a.tp, pp_size=1)
        model = cls.from_hugging_face(a.hf_dir, a.dtype, mapping=mapping, quant_config=quant, **options)
        model.save_checkpoint(a.output_dir, save_config=(rank == 0))
        print(f"rank {rank}/{a.tp}: {a.model} {fields} → {a.output_dir}", flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m glotta.export.trtllm_convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-dir", required=True, help="the Hugging Face folder (`glotta export trtllm` writes it)")
    p.add_argument("--model", required=True, help="tensorrt_llm.models class, e.g. GPTForCausalLM")
    p.add_argument("--output-dir", required=True, help="the TensorRT-LLM checkpoint to write")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="weights")
    p.add_argument("--weight-only", choices=sorted(WEIGHT_ONLY), help="weight-only quantization")
    p.add_argument("--smoothquant", type=float, help="SmoothQuant W8A8 with this alpha (calibrated)")
    p.add_argument("--int8-kv-cache", action="store_true", help="INT8 KV cache (calibrated)")
    p.add_argument("--calib-dir", help="calibration texts: a folder named lambada holding validation.jsonl")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="from_hugging_face keyword")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if (a.smoothquant is not None or a.int8_kv_cache) and not a.calib_dir:
        print("error: SmoothQuant and the INT8 KV cache calibrate activations: give --calib-dir", file=sys.stderr)
        return 2
    try:
        import tensorrt_llm  # noqa: F401
    except ImportError as e:
        print(f"error: TensorRT-LLM is not importable here ({e}): run inside the NGC TensorRT-LLM image or the venv "
              "`make gpu-check` makes", file=sys.stderr)
        return 2
    convert(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
