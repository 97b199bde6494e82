"""The text-level tensor interface shared by the gateway and the Triton models behind it.

The names are those of the TensorRT-LLM ensemble (`text_input`, `max_tokens`, ... → `text_output`), so one
`TritonEngine` speaks to the CPU Python model, a TRT-LLM ensemble and the FasterTransformer ensemble alike. The CPU
model adds optional Glotta tensors (prompt log-probs, token ids, finish reason, Megatron stop rules); the gateway
sends an optional input only when the model declares it, and refuses a request that needs one the model lacks.
"""

from __future__ import annotations

import numpy as np

# name: (Triton datatype, numpy dtype, dims)
STANDARD_INPUTS = {
    "text_input": ("BYTES", np.object_, [1]),
    "max_tokens": ("INT32", np.int32, [1]),
    "temperature": ("FP32", np.float32, [1]),
    "top_k": ("INT32", np.int32, [1]),
    "top_p": ("FP32", np.float32, [1]),
    "seed": ("UINT64", np.uint64, [1]),
    "stop_words": ("BYTES", np.object_, [-1]),
    "stream": ("BOOL", np.bool_, [1]),
    "return_log_probs": ("BOOL", np.bool_, [1]),
    "exclude_input_in_output": ("BOOL", np.bool_, [1]),
}
GLOTTA_INPUTS = {
    "top_p_decay": ("FP32", np.float32, [1]),
    "top_p_bound": ("FP32", np.float32, [1]),
    "num_top_log_probs": ("INT32", np.int32, [1]),
    "return_prompt_log_probs": ("BOOL", np.bool_, [1]),
    "ignore_eos": ("BOOL", np.bool_, [1]),
    "stop_on_eol": ("BOOL", np.bool_, [1]),
    "stop_on_double_eol": ("BOOL", np.bool_, [1]),
    "add_bos": ("BOOL", np.bool_, [1]),
    "prevent_newline_after_colon": ("BOOL", np.bool_, [1]),
}
REQUIRED_INPUTS = ("text_input", "max_tokens")
# The GPU engines behind the same text interface (names of the fastertransformer_backend and tensorrtllm_backend):
# target: (token id datatype, sampling ensemble input → engine input, extra pre-processing outputs set to EOD).
ENGINE_TENSORS = {
    "fastertransformer": ("UINT32", {"temperature": "temperature", "top_k": "runtime_top_k", "top_p": "runtime_top_p",
                                     "seed": "random_seed", "return_log_probs": "is_return_log_probs"}, []),
    "tensorrtllm": ("INT32", {"temperature": "temperature", "top_k": "runtime_top_k", "top_p": "runtime_top_p",
                              "seed": "seed", "return_log_probs": "return_log_probs"}, ["end_id", "pad_id"]),
}


def engine_sampling(target: str) -> list[tuple[str, str, str, type]]:
    """(ensemble input, engine input, Triton datatype, numpy dtype) of a GPU engine's sampling tensors: the ensemble
    input's types, except top_k, which the engines take in their token id type."""
    id_type, names, _ = ENGINE_TENSORS[target]
    return [(src, name, *((id_type, np.dtype(id_type.lower()).type) if src == "top_k" else STANDARD_INPUTS[src][:2]))
            for src, name in names.items()]
# What a model assumes when an optional input is absent: the CPU model fills these in, and the gateway leaves out
# any input equal to its default (fewer tensors per request). One table, so the two sides cannot disagree.
DEFAULTS = {"text_input": "", "max_tokens": 16, "temperature": 1.0, "top_k": 0, "top_p": 0.0, "top_p_decay": 0.0,
            "top_p_bound": 0.0, "seed": None, "stream": False, "return_log_probs": False,
            "exclude_input_in_output": False, "num_top_log_probs": 0, "return_prompt_log_probs": False,
            "ignore_eos": False, "stop_on_eol": False, "stop_on_double_eol": False, "add_bos": False,
            "prevent_newline_after_colon": False}

STANDARD_OUTPUTS = {
    "text_output": ("BYTES", np.object_, [-1]),
    "output_log_probs": ("FP32", np.float32, [-1]),
}
GLOTTA_OUTPUTS = {
    "output_ids": ("INT32", np.int32, [-1]),
    "top_log_probs": ("BYTES", np.object_, [-1]),  # one JSON object per generated token
    "prompt_ids": ("INT32", np.int32, [-1]),
    "prompt_log_probs": ("FP32", np.float32, [-1]),
    "prompt_top_log_probs": ("BYTES", np.object_, [-1]),
    "finish_reason": ("BYTES", np.object_, [1]),  # empty until the last response
}
ALL_INPUTS = {**STANDARD_INPUTS, **GLOTTA_INPUTS}
ALL_OUTPUTS = {**STANDARD_OUTPUTS, **GLOTTA_OUTPUTS}
