"""Triton Python-backend model that serves a Glotta ONNX engine with the text interface (decoupled, streaming).

Each model folder's `1/model.py` re-exports `TritonPythonModel` from here. `execute` only hands requests to the
engine's event loop and returns: the engine batches them continuously and answers through each request's response
sender, so Triton's own scheduler never serializes generations. A request Triton marks cancelled (its client went
away) leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.server.engine.protocol import EngineError, GenerationRequest, SamplingParams, StopConditions
from glotta.server.triton.interface import DEFAULTS

CANCEL_CHECK_S = 0.02


def _scalar(request, name: str):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return DEFAULTS[name]
    v = t.as_numpy().reshape(-1)[0]
    return v.decode("utf-8") if isinstance(v, bytes) else v.item()


def _strings(request, name: str) -> tuple[str, ...]:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return ()
    return tuple(s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in t.as_numpy().reshape(-1) if s)


def parse_request(request) -> tuple[GenerationRequest, bool, bool]:
    """The engine request, plus the `stream` and `exclude_input_in_output` flags."""
    seed = _scalar(request, "seed")
    return (
        GenerationRequest(
            prompt=_scalar(request, "text_input"),
            max_new_tokens=int(_scalar(request, "max_tokens")),
            sampling=SamplingParams(
                temperature=float(_scalar(request, "temperature")),
                top_k=int(_scalar(request, "top_k")),
                top_p=float(_scalar(request, "top_p")),
                top_p_decay=float(_scalar(request, "top_p_decay")),
                top_p_bound=float(_scalar(request, "top_p_bound")),
                seed=None if seed is None else int(seed),
            ),
            stop=StopConditions(
                stop_on_eod=not _scalar(request, "ignore_eos"),
                stop_on_eol=bool(_scalar(request, "stop_on_eol")),
                stop_on_double_eol=bool(_scalar(request, "stop_on_double_eol")),
                stop_strings=_strings(request, "stop_words"),
            ),
            logprobs=bool(_scalar(request, "return_log_probs")),
            top_logprobs=int(_scalar(request, "num_top_log_probs")),
            prompt_logprobs=bool(_scalar(request, "return_prompt_log_probs")),
            add_bos=bool(_scalar(request, "add_bos")),
            prevent_newline_after_colon=bool(_scalar(request, "prevent_newline_after_colon")),
        ),
        bool(_scalar(request, "stream")),
        bool(_scalar(request, "exclude_input_in_output")),
    )


def _tensor(name: str, values, dtype) -> "pb_utils.Tensor":
    return pb_utils.Tensor(name, np.asarray(values, dtype=dtype).reshape(1, -1))


def _response(wanted: set[str], text: str, ids, logprobs, tops, finish: str | None,
              prompt=None) -> "pb_utils.InferenceResponse":
    """Only the outputs the client asked for are built (each one costs serialization on every token)."""
    values = {
        "text_output": lambda: ([text.encode("utf-8")], np.object_),
        "output_ids": lambda: (ids, np.int32),
        "output_log_probs": lambda: (logprobs or [], np.float32),
        "top_log_probs": lambda: ([json.dumps(t).encode() for t in (tops or [])], np.object_),
        "finish_reason": lambda: ([(finish or "").encode()], np.object_),
    }
    if prompt is not None:
        values |= {
            "prompt_ids": lambda: (prompt.token_ids, np.int32),
            "prompt_log_probs": lambda: (prompt.logprobs or [], np.float32),
            "prompt_top_log_probs": lambda: ([json.dumps(t).encode() for t in (prompt.top_logprobs or [])],
                                             np.object_),
        }
    out = [_tensor(name, *make()) for name, make in values.items() if not wanted or name in wanted]
    return pb_utils.InferenceResponse(output_tensors=out)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_dir = Path(args["model_repository"])
        self.engine = OnnxEngine(
            model_dir,
            name=args["model_name"],
            int8=params.get("precision", "fp32") == "int8",
            threads=int(params.get("threads") or 0) or None,
            max_batch=int(params.get("max_batch") or 64),
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="glotta-triton-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.engine.start(), self.loop).result()
        self._metrics = self._engine_metrics(args["model_name"])
        asyncio.run_coroutine_threadsafe(self._publish_metrics(), self.loop)

    @staticmethod
    def _engine_metrics(model: str) -> dict:
        """Engine gauges on Triton's own metrics endpoint (:8002), next to its `nv_inference_*` figures."""
        labels = {"model": model}
        kinds = {"waiting": "GAUGE", "running": "GAUGE", "cancelled": "COUNTER", "steps": "COUNTER"}
        out = {}
        for key, kind in kinds.items():
            family = pb_utils.MetricFamily(
                name=f"glotta_engine_{key}" + ("_total" if kind == "COUNTER" else ""),
                description=f"Glotta engine: {key}",
                kind=getattr(pb_utils.MetricFamily, kind),
            )
            out[key] = (family, family.Metric(labels=labels), kind)
        return out

    async def _publish_metrics(self) -> None:
        while True:
            stats = self.engine.stats()
            for key, (_, metric, kind) in self._metrics.items():
                if kind == "GAUGE":
                    metric.set(stats.get(key, 0))
                else:
                    metric.increment(stats.get(key, 0) - metric.value())
            await asyncio.sleep(0.25)

    def execute(self, requests):
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._serve(request), self.loop)
        return None

    async def _serve(self, request) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            req, stream, exclude_input = parse_request(request)
            wanted = set(request.requested_output_names())
            text = "" if exclude_input else req.prompt
            ids: list[int] = []
            lps: list[float] = []
            tops: list = []
            prompt = None
            next_check = 0.0
            async for chunk in self.engine.generate(req):
                now = time.monotonic()
                if now >= next_check:  # is_cancelled() is a round trip to the server: ask every 20 ms, not per token
                    next_check = now + CANCEL_CHECK_S
                    if request.is_cancelled():
                        sender.send(flags=final)
                        return  # leaving the loop closes the stream: the engine drops the row
                if stream:
                    delta = (text if chunk.prompt is not None else "") + chunk.text
                    resp = _response(wanted, delta, chunk.token_ids, chunk.logprobs, chunk.top_logprobs,
                                     chunk.finish_reason, chunk.prompt)
                    sender.send(resp, flags=final if chunk.finish_reason else 0)
                    continue
                text += chunk.text
                ids += chunk.token_ids
                lps += chunk.logprobs or []
                tops += chunk.top_logprobs or []
                prompt = chunk.prompt or prompt
                if chunk.finish_reason:
                    sender.send(_response(wanted, text, ids, lps, tops, chunk.finish_reason, prompt), flags=final)
        except EngineError as e:
            error = pb_utils.TritonError(e.message, pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)
        except Exception as e:  # never leave a client waiting for a final flag
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {e}")), flags=final)

    def finalize(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.stop(), self.loop).result(timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
