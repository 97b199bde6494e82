"""The GPU engines behind the text interface, per upstream release: one table of what differs between them.

Each target names the Triton backend release its tensor names and rules follow. The pre-processing model turns the
ensemble's text inputs into these tensors; the config writers declare them; `glotta export` picks a target.

| target              | upstream                                                             | seed          | ids    |
|---------------------|----------------------------------------------------------------------|---------------|--------|
| fastertransformer   | fastertransformer_backend, all_models/gpt/fastertransformer          | random_seed   | UINT32 |
| tensorrtllm-24.10   | tensorrtllm_backend v0.14.0 = NGC tritonserver:24.10-trtllm-python-py3 | random_seed | INT32  |
| tensorrtllm         | the current backend (TensorRT-LLM's triton_backend, 2025+)           | seed          | INT32  |
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contract import STANDARD_INPUTS


@dataclass(frozen=True)
class EngineTarget:
    backend: str  # Triton's backend name
    upstream: str  # the release whose config.pbtxt and source the rules below follow
    id_type: str  # token id datatype
    names: dict[str, str]  # ensemble input → engine input
    extra: tuple[str, ...] = ()  # pre-processing outputs set to the tokenizer's EOD (TRT-LLM's end_id / pad_id)
    returns_prompt: bool = False  # FT answers prompt + generation; TRT-LLM (exclude_input_in_output) only the latter
    folder: str = ""  # model folder suffix: glotta-fr-<folder>
    parameters: dict[str, str] = field(default_factory=dict)  # engine config parameters of this release


# enable_kv_cache_reuse: the paged KV blocks of a prompt prefix are reused by later requests (the GPU twin of the CPU
# engine's prefix cache); it needs engines built with --use_paged_context_fmha enable. The default here matches the
# default build; `glotta export trtllm --engine-dir` rewrites it from export/trtllm.py engine_features (off with an
# INT8 KV cache, which TensorRT-LLM cannot build with paged context FMHA).
_TRTLLM_PARAMS = {"gpt_model_type": "inflight_fused_batching", "batch_scheduler_policy": "guaranteed_no_evict",
                  "kv_cache_free_gpu_mem_fraction": "0.85", "exclude_input_in_output": "true",
                  "enable_kv_cache_reuse": "true", "max_beam_width": "1"}
TARGETS = {
    "fastertransformer": EngineTarget(
        "fastertransformer", "triton-inference-server/fastertransformer_backend all_models/gpt/fastertransformer",
        "UINT32", {"temperature": "temperature", "top_k": "runtime_top_k", "top_p": "runtime_top_p",
                   "seed": "random_seed", "return_log_probs": "is_return_log_probs"},
        returns_prompt=True, folder="ft",
        parameters={"tensor_para_size": "1", "pipeline_para_size": "1", "data_type": "fp16", "model_type": "GPT",
                    "int8_mode": "0", "enable_custom_all_reduce": "0"}),
    "tensorrtllm-24.10": EngineTarget(
        "tensorrtllm", "triton-inference-server/tensorrtllm_backend v0.14.0 (NGC 24.10-trtllm-python-py3)",
        "INT32", {"temperature": "temperature", "top_k": "runtime_top_k", "top_p": "runtime_top_p",
                  "seed": "random_seed", "return_log_probs": "return_log_probs"},
        extra=("end_id", "pad_id"), folder="trtllm", parameters=_TRTLLM_PARAMS),
    "tensorrtllm": EngineTarget(
        "tensorrtllm", "NVIDIA/TensorRT-LLM triton_backend/all_models/inflight_batcher_llm (2025+)",
        "INT32", {"temperature": "temperature", "top_k": "runtime_top_k", "top_p": "runtime_top_p",
                  "seed": "seed", "return_log_probs": "return_log_probs"},
        extra=("end_id", "pad_id"), folder="trtllm", parameters=_TRTLLM_PARAMS),
}
DEFAULT_TRTLLM = "tensorrtllm-24.10"  # the Dockerfile's base image


def target(name: str) -> EngineTarget:
    if name not in TARGETS:
        raise ValueError(f"unknown engine target {name!r} (choose from {', '.join(TARGETS)})")
    return TARGETS[name]


def engine_sampling(name: str) -> list[tuple[str, str, str, type]]:
    """(ensemble input, engine input, Triton datatype, numpy dtype) of a target's sampling tensors: the ensemble
    input's types, except top_k, which the engines take in their token id type."""
    t = target(name)
    return [(src, dst, *((t.id_type, np.dtype(t.id_type.lower()).type) if src == "top_k"
                         else STANDARD_INPUTS[src][:2])) for src, dst in t.names.items()]


def sampling_values(top_k: int, top_p: float, temperature: float) -> tuple[int, float]:
    """(runtime_top_k, runtime_top_p) with the CPU engine's meaning: FT and TRT-LLM decode greedily when both are 0,
    where the CPU engine samples the whole distribution — so "neither set" becomes top_p 1.0, and temperature 0
    becomes top_k 1."""
    if temperature < 1e-5:
        return 1, 0.0
    if top_k <= 0 and top_p <= 0.0:
        return 0, 1.0
    return top_k, top_p
