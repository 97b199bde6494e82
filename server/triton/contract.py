"""The one Triton contract: the text interface's tensors, their defaults, and the translations both sides use.

The names are those of the TensorRT-LLM ensemble (`text_input`, `max_tokens`, ... → `text_output`), so one
`TritonEngine` speaks to the CPU Python model, a TRT-LLM ensemble and the FasterTransformer ensemble alike. The CPU
model adds optional Glotta tensors (prompt log-probs, token ids, finish reason, Megatron stop rules); the gateway
sends an optional input only when the model declares it and its value is not the default, and refuses a request that
needs one the model lacks.

`request_to_arrays` (gateway) and `request_from_arrays` (the model inside tritonserver) are one table read both ways;
likewise `response_to_arrays` (model) and `chunk_from_arrays` (gateway).
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from glotta.core.errors import GlottaError, invalid, rename_fields

from ..engine.constraints import Constraint
from ..engine.interface import Chunk, GenerationRequest, PromptInfo, SamplingParams, StopConditions

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
    "presence_penalty": ("FP32", np.float32, [1]),
    "frequency_penalty": ("FP32", np.float32, [1]),
    "repetition_penalty": ("FP32", np.float32, [1]),
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
    "request_group": ("BYTES", np.object_, [1]),  # prompts of one client request share the batch fairly
    "input_ids": ("INT32", np.int32, [-1]),  # a prompt given as token ids (then text_input is empty)
    "logit_bias": ("BYTES", np.object_, [1]),  # JSON [[token id, bias], ...]
    "constraint_kind": ("BYTES", np.object_, [1]),  # json_object | json_schema | regex | choice | lark
    "constraint": ("BYTES", np.object_, [1]),  # its schema, regex, choices (JSON list) or grammar
}
REQUIRED_INPUTS = ("text_input", "max_tokens")
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
    "prompt_cached_tokens": ("INT32", np.int32, [1]),  # of the prompt, taken from the prefix cache
}
ALL_INPUTS = {**STANDARD_INPUTS, **GLOTTA_INPUTS}
ALL_OUTPUTS = {**STANDARD_OUTPUTS, **GLOTTA_OUTPUTS}

# input tensor → the GenerationRequest field it carries (dotted), and whether the tensor holds its negation.
# What a model assumes when an optional input is absent is the field's default in GenerationRequest, so the two
# sides cannot disagree.
_FIELDS: dict[str, tuple[str, bool]] = {
    "text_input": ("prompt", False),
    "request_group": ("group", False),
    "max_tokens": ("max_new_tokens", False),
    "temperature": ("sampling.temperature", False),
    "top_k": ("sampling.top_k", False),
    "top_p": ("sampling.top_p", False),
    "top_p_decay": ("sampling.top_p_decay", False),
    "top_p_bound": ("sampling.top_p_bound", False),
    "seed": ("sampling.seed", False),
    "stop_words": ("stop.stop_strings", False),
    "ignore_eos": ("stop.stop_on_eod", True),
    "stop_on_eol": ("stop.stop_on_eol", False),
    "stop_on_double_eol": ("stop.stop_on_double_eol", False),
    "return_log_probs": ("logprobs", False),
    "num_top_log_probs": ("top_logprobs", False),
    "return_prompt_log_probs": ("prompt_logprobs", False),
    "add_bos": ("add_bos", False),
    "prevent_newline_after_colon": ("prevent_newline_after_colon", False),
    "stream": ("stream", False),
    "presence_penalty": ("sampling.presence_penalty", False),
    "frequency_penalty": ("sampling.frequency_penalty", False),
    "repetition_penalty": ("sampling.repetition_penalty", False),
    "logit_bias": ("sampling.logit_bias", False),
    "input_ids": ("prompt_ids", False),
    "constraint_kind": ("constraint.kind", False),
    "constraint": ("constraint.value", False),
}
_JSON = {"logit_bias"}  # tensors holding one JSON text
_LISTS = {"stop_words", "input_ids"}  # tensors holding a list (a tuple field)
_DEFAULT_REQUEST = GenerationRequest(prompt="", max_new_tokens=16, stream=False)
# the engine's neutral field names → the tensor names a Triton client sent (for error messages)
TENSOR_NAMES = {path.rpartition(".")[2]: name for name, (path, negated) in _FIELDS.items() if not negated}


def triton_message(e: GlottaError) -> str:
    """An engine error as a Triton client reads it: the fields named by the tensors it sent."""
    return rename_fields(e.message, TENSOR_NAMES) or ""


def _get(req: GenerationRequest, path: str):
    obj = req
    for part in path.split("."):
        obj = getattr(obj, part) if obj is not None else None  # an absent constraint has no kind
    return obj


def _value(req: GenerationRequest, name: str):
    path, negated = _FIELDS[name]
    v = _get(req, path)
    if name == "top_k" and req.sampling.greedy:
        return 1  # engines that know no temperature 0 still decode greedily
    return (not v) if negated else v


DEFAULTS = {name: _value(_DEFAULT_REQUEST, name) for name in _FIELDS} | {"exclude_input_in_output": False}


def request_to_arrays(req: GenerationRequest, accepted: set[str], decoupled: bool,
                      batch_dim: bool = False) -> dict[str, np.ndarray]:
    """Input arrays for a model that declares `accepted`: the required ones, and each optional one only when it
    differs from the default (fewer tensors to build, send and parse per request). `batch_dim` ([1, n], a batch of
    one) for models with a batch dimension (the GPU ensembles); the CPU model takes one row ([n])."""
    values = {name: _value(req, name) for name in _FIELDS}
    values["stream"] = req.stream and decoupled
    values["exclude_input_in_output"] = True
    arrays = {}
    for name, v in values.items():
        if v is None or v == () or (name not in REQUIRED_INPUTS and v == DEFAULTS[name]):
            continue
        if name not in accepted:
            if name in ("stream", "exclude_input_in_output", "request_group"):
                continue  # a non-streaming ensemble answers once, with the generated text only; grouping is advice
            raise invalid(f"this model does not support `{name}`", name)
        items = [json.dumps(v)] if name in _JSON else list(v) if isinstance(v, tuple) else [v]
        if ALL_INPUTS[name][0] == "BYTES":
            items = [s.encode("utf-8") for s in items]
        arr = np.asarray(items, dtype=ALL_INPUTS[name][1])
        arrays[name] = arr.reshape(1, -1) if batch_dim else arr.reshape(-1)
    return arrays


def request_from_arrays(get: Callable[[str], np.ndarray | None]) -> tuple[GenerationRequest, bool]:
    """The engine request of one row, and the `exclude_input_in_output` flag; `get(name)` is None when absent."""
    parts: dict[str, dict] = {"": {}, "sampling": {}, "stop": {}, "constraint": {}}
    for name, (path, negated) in _FIELDS.items():
        arr = get(name)
        if arr is None:
            continue
        flat = [x.decode("utf-8") if isinstance(x, bytes) else x.item() if hasattr(x, "item") else x
                for x in np.asarray(arr).reshape(-1)]
        if name in _LISTS:
            value = tuple(s for s in flat if s or s == 0)
        elif not flat:
            continue
        elif name in _JSON:
            value = tuple(tuple(p) for p in json.loads(flat[0]))
        else:
            value = flat[0]
            value = (not value) if negated else value
        group, _, field = path.rpartition(".")
        parts[group][field] = value
    exclude = get("exclude_input_in_output")
    top = parts[""]
    top.setdefault("prompt", _DEFAULT_REQUEST.prompt)
    top.setdefault("max_new_tokens", _DEFAULT_REQUEST.max_new_tokens)
    top.setdefault("stream", _DEFAULT_REQUEST.stream)
    if parts["constraint"]:
        top["constraint"] = Constraint(field="constraint", **parts["constraint"])
    req = GenerationRequest(sampling=SamplingParams(**parts["sampling"]), stop=StopConditions(**parts["stop"]), **top)
    return req, bool(exclude is not None and np.asarray(exclude).reshape(-1)[0])


def response_to_arrays(wanted: set[str], text: str, ids: list[int], logprobs: list[float] | None, tops: list | None,
                       finish: str | None, prompt: PromptInfo | None = None) -> dict[str, np.ndarray]:
    """One response's output arrays (one row: no batch dimension); only those the client asked for (each one costs
    serialization per token)."""
    values = {
        "text_output": lambda: [text.encode("utf-8")],
        "output_ids": lambda: ids,
        "output_log_probs": lambda: logprobs or [],
        "top_log_probs": lambda: [json.dumps(t).encode() for t in (tops or [])],
        "finish_reason": lambda: [(finish or "").encode()],
    }
    if prompt is not None:
        values |= {
            "prompt_ids": lambda: prompt.token_ids,
            "prompt_log_probs": lambda: prompt.logprobs or [],
            "prompt_top_log_probs": lambda: [json.dumps(t).encode() for t in (prompt.top_logprobs or [])],
            "prompt_cached_tokens": lambda: [prompt.cached_tokens],
        }
    return {name: np.asarray(make(), dtype=ALL_OUTPUTS[name][1]).reshape(-1)
            for name, make in values.items() if not wanted or name in wanted}


def chunk_from_arrays(get: Callable[[str], np.ndarray | None], first: bool, prompt_ids: list[int]) -> Chunk:
    """A response's arrays back into the engine protocol's `Chunk` (the first one carries the prompt)."""
    def floats(a):
        return a.reshape(-1).astype(float).tolist() if a is not None and a.size else None

    def objects(a):
        return [json.loads(t) for t in a.reshape(-1)] if a is not None and a.size else None

    text, ids, finish = get("text_output"), get("output_ids"), get("finish_reason")
    chunk = Chunk(
        text=b"".join(text.reshape(-1)).decode("utf-8") if text is not None else "",
        token_ids=[i for i in ids.reshape(-1).astype(int).tolist() if i >= 0] if ids is not None else [],
        logprobs=floats(get("output_log_probs")),
        top_logprobs=objects(get("top_log_probs")),
        finish_reason=(finish.reshape(-1)[0].decode() or None) if finish is not None else None,
    )
    if first:
        p_ids = get("prompt_ids")
        chunk.prompt = PromptInfo(
            token_ids=p_ids.reshape(-1).astype(int).tolist() if p_ids is not None else prompt_ids,
            logprobs=floats(get("prompt_log_probs")),
            top_logprobs=objects(get("prompt_top_log_probs")),
        )
        cached = get("prompt_cached_tokens")
        if cached is not None and cached.size:
            chunk.prompt.cached_tokens = int(cached.reshape(-1)[0])
    return chunk
