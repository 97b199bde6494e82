"""Pre- and post-processing Python models for the GPU ensembles (FasterTransformer, TensorRT-LLM).

They give those engines the same text interface as the CPU model: `text_input`, `max_tokens`, sampling → token
tensors in the engine's own names and types; output ids → `text_output`, `output_ids`, `finish_reason`. The
`target` parameter (a name of glotta.server.triton.engine_targets) picks names and integer types; `tokenizer_dir`
(relative to the model folder) holds `tokenizer.json`. Both run on CPU, so the tests load them in a real Triton here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from glotta.core.tokenizer import Tokenizer
from glotta.server.triton.contract import DEFAULTS
from glotta.server.triton.engine_targets import engine_sampling, sampling_values, target


def _params(args: dict) -> tuple[str, Tokenizer]:
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    name = params.get("target", "fastertransformer")
    target(name)  # refuses an unknown target with the list of known ones
    tok_dir = (Path(args["model_repository"]) / params.get("tokenizer_dir", ".")).resolve()
    return name, Tokenizer(tok_dir / "tokenizer.json")


def word_list(tokenizer: Tokenizer, words: list[str]) -> np.ndarray:
    """FT/TRT-LLM stop-word format for one request: [2, N] = flattened ids and their end offsets (-1 padded)."""
    ids, offsets = [], []
    for w in words:
        ids += tokenizer.encode(w)
        offsets.append(len(ids))
    n = max(1, len(ids))
    out = np.full((2, n), -1, np.int32)
    out[0, : len(ids)] = ids
    out[1, : len(offsets)] = offsets
    return out


def _optional(request, name: str, default, dtype, rows: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, 1]: an absent input is its default on every row (`None`, i.e. no seed: a fresh seed per row, as the
    CPU engine draws one per request — a fixed 0 would give every sampled request the same text); a [1, 1] value
    holds for every row."""
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is not None:
        value = t.as_numpy().reshape(-1, 1).astype(dtype)
        return np.ascontiguousarray(np.broadcast_to(value, (rows, 1))) if len(value) == 1 else value
    if default is None:
        return rng.integers(0, np.iinfo(dtype).max, size=(rows, 1), dtype=dtype, endpoint=True)
    return np.full((rows, 1), default, dtype)


class Preprocessing:
    def initialize(self, args: dict) -> None:
        self.target, self.tokenizer = _params(args)
        t = target(self.target)
        self.extra = t.extra
        self.id_type = np.dtype(t.id_type.lower()).type
        self.sampling = engine_sampling(self.target)
        self.rng = np.random.default_rng()  # seeds of requests that bring none

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)
            max_tokens = pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy().reshape(-1, 1)
            encoded = [self.tokenizer.encode(t.decode("utf-8")) or [self.tokenizer.eod_id] for t in texts]
            width = max(map(len, encoded))
            ids = np.full((len(encoded), width), self.tokenizer.eod_id, self.id_type)
            for i, e in enumerate(encoded):
                ids[i, : len(e)] = e
            lengths = np.array([[len(e)] for e in encoded], self.id_type)
            stop_t = pb_utils.get_input_tensor_by_name(request, "stop_words")
            stops = [[]] * len(encoded)
            if stop_t is not None:
                stops = [[w.decode("utf-8") for w in row if w] for row in stop_t.as_numpy().reshape(len(encoded), -1)]
            lists = [word_list(self.tokenizer, s) for s in stops]
            n = max(x.shape[1] for x in lists)
            stop_words = np.stack([np.pad(x, ((0, 0), (0, n - x.shape[1])), constant_values=-1) for x in lists])
            out = [
                pb_utils.Tensor("input_ids", ids),
                pb_utils.Tensor("input_lengths", lengths),
                pb_utils.Tensor("request_output_len", max_tokens.astype(self.id_type)),
                pb_utils.Tensor("stop_words_list", stop_words),
            ]
            values = {source: _optional(request, source, DEFAULTS[source], dtype, len(encoded), self.rng)
                      for source, _, _, dtype in self.sampling}
            top_k, top_p, temperature = (values[n].reshape(-1) for n in ("top_k", "top_p", "temperature"))
            rows = [sampling_values(int(a), float(b), float(c)) for a, b, c in zip(top_k, top_p, temperature)]
            values["top_k"] = np.array([[k] for k, _ in rows], values["top_k"].dtype)
            values["top_p"] = np.array([[p] for _, p in rows], values["top_p"].dtype)
            for source, name, _, _ in self.sampling:
                out.append(pb_utils.Tensor(name, values[source]))
            eod = np.full((len(encoded), 1), self.tokenizer.eod_id, np.int32)
            out += [pb_utils.Tensor(name, eod) for name in self.extra]  # TRT-LLM's end_id / pad_id
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses


class Postprocessing:
    def initialize(self, args: dict) -> None:
        self.target, self.tokenizer = _params(args)

    def execute(self, requests):
        responses = []
        for request in requests:
            out_ids = pb_utils.get_input_tensor_by_name(request, "output_ids").as_numpy()  # [b, beam, seq]
            seq_len = pb_utils.get_input_tensor_by_name(request, "sequence_length").as_numpy().reshape(len(out_ids), -1)
            in_len = pb_utils.get_input_tensor_by_name(request, "input_lengths")
            wanted = pb_utils.get_input_tensor_by_name(request, "request_output_len")
            wanted = wanted.as_numpy().reshape(-1) if wanted is not None else None
            # FT returns prompt + generation; TRT-LLM (exclude_input_in_output) only the generation
            starts = in_len.as_numpy().reshape(-1) if in_len is not None else np.zeros(len(out_ids), np.int64)
            texts, gens, reasons = [], [], []
            for i in range(len(out_ids)):
                gen = out_ids[i, 0, int(starts[i]) : int(seq_len[i, 0])].astype(np.int64).tolist()
                eod = bool(gen) and gen[-1] == self.tokenizer.eod_id
                gens.append(gen[:-1] if eod else gen)
                texts.append(self.tokenizer.decode(gens[-1]).encode("utf-8"))
                # TRT-LLM never returns the end token: a generation shorter than asked for stopped early
                short = wanted is not None and len(gen) < int(wanted[min(i, len(wanted) - 1)])
                reasons.append(b"eod" if eod else b"stop" if short else b"length")
            width = max(1, max(map(len, gens)))
            ids = np.full((len(gens), width), -1, np.int32)
            for i, g in enumerate(gens):
                ids[i, : len(g)] = g
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("text_output", np.array(texts, dtype=np.object_).reshape(-1, 1)),
                pb_utils.Tensor("output_ids", ids),
                pb_utils.Tensor("finish_reason", np.array(reasons, dtype=np.object_).reshape(-1, 1)),
            ]))
        return responses
