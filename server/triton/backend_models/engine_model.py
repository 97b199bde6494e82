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

import triton_python_backend_utils as pb_utils

from glotta.core.errors import GlottaError
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.server.triton.contract import request_from_arrays, response_to_arrays

CANCEL_CHECK_S = 0.02


def parse_request(request):
    """The engine request and the `exclude_input_in_output` flag, read through the one Triton contract."""
    def get(name: str):
        t = pb_utils.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy()

    return request_from_arrays(get)


def _response(wanted: set[str], text: str, ids, logprobs, tops, finish: str | None,
              prompt=None) -> "pb_utils.InferenceResponse":
    arrays = response_to_arrays(wanted, text, ids, logprobs, tops, finish, prompt)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, a) for n, a in arrays.items()])


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
            req, exclude_input = parse_request(request)
            stream = req.stream
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
        except GlottaError as e:
            error = pb_utils.TritonError(e.message, pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)
        except Exception as e:  # never leave a client waiting for a final flag
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {e}")), flags=final)

    def finalize(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.stop(), self.loop).result(timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
